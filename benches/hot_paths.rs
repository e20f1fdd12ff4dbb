//! Criterion benchmarks of the per-request hot paths: request decoding, slot hashing, routing
//! one command (lookup, keys, slot), and framing a backend reply.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use respgate::cluster::Slot;
use respgate::command::{CommandSpec, CommandTable, Lookup};
use respgate::protocol::request::encode_command;
use respgate::protocol::{Protocol, RequestParser, frame_reply};
use std::hint::black_box;

fn spec(name: &str, arity: i64, first: i64, last: i64, step: i64) -> CommandSpec {
    CommandSpec {
        name: name.into(),
        arity,
        first_key: first,
        last_key: last,
        step,
        ..CommandSpec::default()
    }
}

fn table() -> CommandTable {
    CommandTable::new([
        spec("get", 2, 1, 1, 1),
        spec("set", -3, 1, 1, 1),
        spec("mget", -2, 1, -1, 1),
        spec("mset", -3, 1, -1, 2),
        spec("incr", 2, 1, 1, 1),
    ])
}

fn decode(c: &mut Criterion) {
    let mut parser = RequestParser::new(512 * 1024 * 1024, 1024 * 1024);
    let mut pipeline = BytesMut::new();
    for i in 0..16 {
        encode_command(&mut pipeline, &["SET", &format!("key:{i}"), "abc"]);
    }
    let pipeline = pipeline.freeze();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(16));
    group.bench_function("set_pipeline_16", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&pipeline[..]);
            while let Ok(Some(req)) = parser.parse(&mut buf) {
                black_box(req);
            }
        })
    });
    group.finish();
}

fn slot(c: &mut Criterion) {
    c.bench_function("slot/plain_key", |b| {
        b.iter(|| Slot::for_key(black_box(b"user:1000:profile")))
    });
    c.bench_function("slot/hash_tag", |b| {
        b.iter(|| Slot::for_key(black_box(b"{user1000}.following")))
    });
}

fn route(c: &mut Criterion) {
    let table = table();
    let args: Vec<Bytes> = ["GET", "user:1000:profile"]
        .iter()
        .map(|s| Bytes::from(*s))
        .collect();
    let mut keys = Vec::new();
    c.bench_function("route/get", |b| {
        b.iter(|| {
            let Lookup::Found(spec) = table.lookup(black_box(&args)) else {
                panic!("get is known");
            };
            assert!(spec.arity_ok(args.len()));
            keys.clear();
            spec.keys(&args, &mut keys);
            black_box(keys.first().map(|k| Slot::for_key(k)))
        })
    });
}

fn encode_and_frame(c: &mut Criterion) {
    let reply = b"$3\r\nabc\r\n";
    c.bench_function("frame/bulk_reply", |b| {
        b.iter(|| frame_reply(black_box(reply), Protocol::Resp2))
    });
    let mut array = BytesMut::new();
    encode_command(&mut array, &["a"; 10]);
    c.bench_function("frame/array_10", |b| {
        b.iter(|| frame_reply(black_box(&array), Protocol::Resp2))
    });
    c.bench_function("encode/set_command", |b| {
        let mut out = BytesMut::with_capacity(64);
        b.iter(|| {
            out.clear();
            encode_command(&mut out, black_box(&["SET", "key:1", "abc"]));
        })
    });
}

criterion_group!(benches, decode, slot, route, encode_and_frame);
criterion_main!(benches);
