//! Criterion benchmarks of the per-request hot paths: request decoding, slot hashing, routing
//! one command (lookup, keys, slot), a key through the route table, and framing a backend reply.
//! The `*_in_1k_reads` cases feed the input 1 KB at a time, as a slow peer would, to show that
//! resuming costs nothing extra. `acl/*` measure the permission check of a restricted user
//! (sessions of unrestricted users, and every session of a proxy without `[users]`, skip it).
//! `multikey/*` measure the proxy's own work for a command split across slots.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use respgate::command::{CommandSpec, CommandTable, Lookup};
use respgate::keyspace::{BackendId, Destination, PrefixRule, RouteTable};
use respgate::protocol::request::encode_command;
use respgate::protocol::{Protocol, ReplyFramer, RequestParser, frame_reply};
use respgate::slot::Slot;
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
    let mset: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    let mut request = BytesMut::new();
    encode_command(&mut request, &mset);
    let request = request.freeze();
    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function("mset_1000_args", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&request[..]);
            black_box(parser.parse(&mut buf).unwrap().unwrap());
        })
    });
    group.bench_function("mset_1000_args_in_1k_reads", |b| {
        b.iter(|| {
            let mut parser = RequestParser::new(512 * 1024 * 1024, 1024 * 1024);
            let mut buf = BytesMut::new();
            for piece in request.chunks(1024) {
                buf.extend_from_slice(piece);
                if let Some(req) = parser.parse(&mut buf).unwrap() {
                    black_box(req);
                }
            }
        })
    });
    group.finish();
}

/// Frames `input` fed 1 KB at a time with one framer, as a node reader does.
fn frame_in_1k_reads(input: &[u8]) -> usize {
    let mut framer = ReplyFramer::new(Protocol::Resp3);
    let mut buf = Vec::with_capacity(input.len());
    let mut frames = 0;
    for piece in input.chunks(1024) {
        buf.extend_from_slice(piece);
        while let Ok(Some(frame)) = framer.next_frame(&buf) {
            buf.drain(..frame.len);
            frames += 1;
        }
    }
    frames
}

/// Replies bigger than one read: a 1,000-element array, a reply nested 1,000 deep, a RESP3 map
/// of sets.
fn frame_large(c: &mut Criterion) {
    let mut array = BytesMut::new();
    let elements: Vec<String> = (0..1000).map(|i| format!("value:{i}")).collect();
    encode_command(&mut array, &elements);
    let mut nested = b"*1\r\n".repeat(1000);
    nested.extend_from_slice(b":1\r\n");
    let mut map = b"%100\r\n".to_vec();
    for i in 0..100 {
        map.extend_from_slice(format!("$6\r\nkey:{i:02}\r\n~10\r\n").as_bytes());
        for j in 0..10 {
            map.extend_from_slice(format!("+member:{j}\r\n").as_bytes());
        }
    }
    let mut group = c.benchmark_group("frame");
    for (name, input, protocol) in [
        ("array_1000", &array[..], Protocol::Resp2),
        ("nested_1000", &nested[..], Protocol::Resp2),
        ("resp3_map_of_sets", &map[..], Protocol::Resp3),
    ] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| frame_reply(black_box(input), protocol).unwrap().unwrap())
        });
        group.bench_function(format!("{name}_in_1k_reads"), |b| {
            b.iter(|| assert_eq!(frame_in_1k_reads(black_box(input)), 1))
        });
    }
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
    // What dispatch did before several backends: the keys themselves, then their slot. Kept
    // beside the new path so one run compares the two under the same load.
    let mut keys = Vec::new();
    c.bench_function("route/get_one_cluster_before", |b| {
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
    // What dispatch does for a keyed command: lookup, arity, the keys' positions, each key's
    // backend through the route table (one backend, no routes) and its slot there.
    let routes = RouteTable::single(BackendId(0));
    let mut positions = Vec::new();
    for (name, args) in [
        ("route/get", args.clone()),
        // SET's keys come from Redis's own procedure (`setGetKeys`), not its key specs.
        (
            "route/set",
            ["SET", "user:1000:profile", "v", "EX", "100"]
                .iter()
                .map(|s| Bytes::from(*s))
                .collect(),
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let Lookup::Found(spec) = table.lookup(black_box(&args)) else {
                    panic!("the command is known");
                };
                assert!(spec.arity_ok(args.len()));
                positions.clear();
                spec.key_positions(&args, &mut positions);
                black_box(positions.first().and_then(|&i| args.get(i)).map(|key| {
                    let backend = routes.route(key).backend;
                    (backend, routes.slot_on(backend, key))
                }))
            })
        });
    }
}

/// How many keys the route benches cycle through: a power of two, so the next index is a mask
/// (a division would cost about as much as routing one key to a single backend).
const ROUTE_KEYS: usize = 256;

/// Keys of a multi-tenant keyspace: tenants' plain and tagged keys, and keys no rule matches.
fn tenant_keys() -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for i in 0..ROUTE_KEYS as u32 {
        // A spread of tenants (a multiplicative hash, so neighbours differ), some beyond the rules.
        let tenant = i.wrapping_mul(2_654_435_761) % 130;
        keys.push(match i % 4 {
            0 => format!("tenant{tenant}:user:{i}:profile").into_bytes(),
            1 => format!("{{tenant{tenant}:user:{i}}}:cart").into_bytes(),
            2 => format!("session:{i:08x}").into_bytes(),
            _ => format!("tenant{tenant}:orders:{i}").into_bytes(),
        });
    }
    keys
}

/// Each iteration routes one key, cycling through `keys`: the time shown is per key.
fn route_table(c: &mut Criterion) {
    let keys = tenant_keys();
    let single = RouteTable::single(BackendId(0));
    c.bench_function("route_table_single", |b| {
        let mut at = 0;
        b.iter(|| {
            at = (at + 1) & (ROUTE_KEYS - 1);
            black_box(single.route(black_box(&keys[at])))
        })
    });
    // 100 rules as a multi-tenant deployment writes them: `tenantN:` for 96 tenants, a few
    // service prefixes, one slot split; every fourth stripping its prefix.
    let mut prefixes: Vec<String> = (0..96u32)
        .map(|i| format!("tenant{}:", i.wrapping_mul(7919) % 100))
        .collect();
    prefixes.extend(["cache:v2:", "queue:", "lock:", "archive:"].map(String::from));
    let by_slot: Box<[BackendId]> = (0..16384u16).map(|s| BackendId(s / 4096)).collect();
    let rules: Vec<PrefixRule> = prefixes
        .iter()
        .enumerate()
        .map(|(i, prefix)| PrefixRule {
            prefix: Bytes::from(prefix.clone()),
            strip: i % 4 == 3,
            to: if i == 0 {
                Destination::BySlot(by_slot.clone())
            } else {
                Destination::Backend(BackendId((i % 8) as u16))
            },
        })
        .collect();
    let table = RouteTable::new(BackendId(0), rules);
    assert_eq!(table.rules().len(), 100);
    c.bench_function("route_table_100_prefixes", |b| {
        let mut at = 0;
        b.iter(|| {
            at = (at + 1) & (ROUTE_KEYS - 1);
            black_box(table.route(black_box(&keys[at])))
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

/// What counting one request adds on the hot path (see `src/session/tally.rs`): its command's
/// counter, a clock reading, its latency histogram, the slow log's threshold, and the reference
/// to the raw request kept for a slow log entry.
fn request_metrics(c: &mut Criterion) {
    respgate::metrics::install();
    let counters = respgate::metrics::command_counters("get");
    let histogram = respgate::metrics::LatencyHistogram::default();
    let slowlog = respgate::slowlog::SlowLogLimits {
        threshold_us: 10_000,
        max_len: 128,
    };
    let raw = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n");
    let started = std::time::Instant::now();
    c.bench_function("metrics/request_tally", |b| {
        b.iter(|| {
            let kept = black_box(raw.clone());
            counters.count(black_box(false));
            let elapsed = started.elapsed();
            histogram.record(elapsed);
            black_box(slowlog.is_slow(elapsed));
            drop(kept);
        })
    });
}

/// The permission check of a restricted user on `GET`: beside `route/get`, what a restricted
/// user adds to a request (a second lookup, the command's bit, the key against the patterns).
fn acl(c: &mut Criterion) {
    use respgate::acl::{Glob, Users};
    use respgate::config::{BackendConfig, Config, UserConfig};
    let mut config = Config::default();
    config.backends.insert(
        "main".into(),
        BackendConfig {
            seeds: vec!["127.0.0.1:7000".into()],
            ..BackendConfig::default()
        },
    );
    config.users.insert(
        "app".into(),
        UserConfig {
            passwords: vec!["pw".into()],
            commands: "+@all -@dangerous".into(),
            keys: vec!["~tenant:*".into(), "~user:*:profile".into()],
            ..UserConfig::default()
        },
    );
    let users = Users::compile(&config, &|_| None).expect("users");
    let mut table = table();
    table.grant(&users);
    let user = users.all().iter().find(|u| u.name == "app").expect("app");
    let routes = RouteTable::single(BackendId(0));
    let args: Vec<Bytes> = ["GET", "user:1000:profile"]
        .iter()
        .map(|s| Bytes::from(*s))
        .collect();
    let mut scratch = Vec::new();
    c.bench_function("acl/get_restricted", |b| {
        b.iter(|| {
            let Lookup::Found(spec) = table.lookup(black_box(&args)) else {
                panic!("get is known");
            };
            black_box(user.check(spec, &args, &routes, &mut scratch).is_ok())
        })
    });
    let glob = Glob::new(b"user:*:profile");
    c.bench_function("acl/glob_star_middle", |b| {
        b.iter(|| black_box(glob.matches(black_box(b"user:1000:profile"))))
    });
}

/// The proxy's own work for a split `MSET` of 10 keys in 10 slots (redis-benchmark's `-t
/// mset`): the plan (keys grouped by slot), every part encoded into one buffer, and the merge
/// of the parts' `+OK`. The request is parsed once; each iteration plans a clone of it.
fn multikey(c: &mut Criterion) {
    use respgate::command::SplitKind;
    use respgate::multikey::{merge, plan};
    let mut words = vec!["MSET".to_string()];
    for i in 0..10 {
        words.extend([format!("key:{:012}", i * 7919), "xxx".to_string()]);
    }
    let mut encoded = BytesMut::new();
    encode_command(&mut encoded, &words);
    let mut parser = RequestParser::new(512 * 1024 * 1024, 1024 * 1024);
    let request = parser.parse(&mut encoded).unwrap().unwrap();
    let routes = RouteTable::single(BackendId(0));
    let split = plan(SplitKind::Mset, request.clone(), &routes).unwrap();
    assert_eq!(split.parts().len(), 10, "10 keys in 10 slots");
    let replies = vec![Bytes::from_static(b"+OK\r\n"); 10];
    c.bench_function("multikey/mset_10_slots_plan_encode_merge", |b| {
        b.iter_batched(
            || request.clone(),
            |request| {
                let split = plan(SplitKind::Mset, request, &routes).unwrap();
                let mut out = BytesMut::with_capacity(split.encoded_capacity());
                for part in split.parts() {
                    split.encode(part, &mut out);
                }
                black_box(out);
                merge(&split, &replies, Protocol::Resp2)
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    multikey,
    request_metrics,
    acl,
    decode,
    slot,
    route,
    route_table,
    encode_and_frame,
    frame_large
);
criterion_main!(benches);
