// node-redis (package `redis`) through respgate: the operations an application does, with
// `createClient` over RESP2 or RESP3, or with `createCluster` and its defaults, discovering the
// topology the proxy announces. Run by tests/clients.rs:
//     node node_redis.mjs HOST PORT MODE        (MODE: resp2 | resp3 | cluster)
// Prints PASS/FAIL per check; exits 1 when any failed. See harness.mjs.

import { args, assertDialedOnly, keysOfManySlots, runChecks, sleep, WAIT_MS } from './harness.mjs';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { createClient, createCluster, RESP_TYPES } from 'redis';

const { host, port, mode } = args(['resp2', 'resp3', 'cluster']);
const version = createRequire(import.meta.url)('redis/package.json').version;
const cluster = mode === 'cluster';
const prefix = `node-redis-${mode}:`;
const key = (name) => `${prefix}${name}`;
const url = `redis://${host}:${port}`;
const made = [];

/** A new connected client: its own connection (plain) or its own cluster client. */
async function client() {
  const made1 = cluster
    ? createCluster({ rootNodes: [{ url }] })
    : createClient({ url, RESP: mode === 'resp2' ? 2 : 3 });
  // Without a listener an error event would end the process instead of failing a check.
  made1.on('error', (e) => console.log(`client error: ${e?.message ?? e}`));
  made.push(made1);
  await made1.connect();
  return made1;
}

const r = await client();

/** A client for every master the client knows, to run node-wide commands on. */
async function masters() {
  return cluster ? Promise.all(r.masters.map((m) => r.nodeClient(m))) : [r];
}

/** The value of `name` in a HELLO reply, a map (RESP3) or a flat array (RESP2). */
function helloField(hello, name) {
  if (Array.isArray(hello)) return hello[hello.indexOf(name) + 1];
  if (hello instanceof Map) return hello.get(name);
  return hello[name];
}

const checks = [
  ['protocol', async () => {
    if (cluster) {
      const nodes = [...r.masters, ...r.replicas].map((n) => `${n.host}:${n.port}`);
      assert.deepEqual(nodes, [`${host}:${port}`], `nodes discovered: ${nodes}`);
    }
    const [node] = await masters();
    const hello = await node.sendCommand(['HELLO']);
    assert.equal(helloField(hello, 'proto'), mode === 'resp2' ? 2 : 3, `HELLO: ${JSON.stringify(hello)}`);
  }],
  ['set_get', async () => {
    for (let i = 0; i < 100; i++) assert.equal(await r.set(key(`k${i}`), `value-${i}`), 'OK');
    for (let i = 0; i < 100; i++) assert.equal(await r.get(key(`k${i}`)), `value-${i}`);
    assert.equal(await r.get(key('missing')), null);
  }],
  ['multi_slot_mget_mset_del', async () => {
    // createClient sends one command over many slots (the proxy splits it); createCluster
    // splits it by shard itself first.
    const keys = keysOfManySlots(prefix, 'multi', 40);
    assert.equal(await r.mSet(keys.map((k, i) => [k, `m${i}`])), 'OK');
    const got = await r.mGet([...keys, key('multi:missing')]);
    assert.deepEqual(got, [...keys.map((_, i) => `m${i}`), null]);
    assert.equal(await r.del([...keys, key('multi:missing')]), keys.length);
    assert.equal(await r.exists(keys), 0);
  }],
  ['pipeline_of_200', async () => {
    const keys = keysOfManySlots(prefix, 'pipe', 100);
    const pipeline = r.multi();
    keys.forEach((k, i) => pipeline.set(k, `p${i}`));
    keys.forEach((k) => pipeline.get(k));
    const replies = await pipeline.execAsPipeline();
    assert.deepEqual(replies, [...keys.map(() => 'OK'), ...keys.map((_, i) => `p${i}`)]);
  }],
  ['multi_exec', async () => {
    const counter = `{t}${prefix}counter`;
    const note = `{t}${prefix}note`;
    const replies = await r.multi().set(counter, '1').incr(counter).set(note, 'done').get(note).get(counter).exec();
    assert.deepEqual(replies, ['OK', 2, 'OK', 'done', '2']);
  }],
  ['publish_subscribe', async () => {
    const channel = key('channel');
    const subscriber = cluster ? r : await r.duplicate().on('error', () => {}).connect();
    if (!cluster) made.push(subscriber);
    let timer;
    let listener;
    const received = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no message within ${WAIT_MS} ms`)), WAIT_MS);
      listener = (message, ch) => resolve([ch, message]);
    });
    await subscriber.subscribe(channel, listener);
    try {
      assert.equal(await r.publish(channel, 'hello'), 1, 'PUBLISH reached no subscriber');
      assert.deepEqual(await received, [channel, 'hello']);
    } finally {
      clearTimeout(timer);
      await subscriber.unsubscribe(channel);
    }
  }],
  ['blpop_woken_by_lpush', async () => {
    const queue = key('queue');
    await r.del(queue);
    // A connection of its own: a blocked command holds its connection.
    const blocker = await client();
    const popped = blocker.blPop(queue, WAIT_MS / 1000);
    // Give BLPOP time to reach the node and block; a pop that happens to start after the push
    // still passes, so this wait only makes the wake-up the likely path.
    await sleep(500);
    assert.equal(await r.lPush(queue, 'job'), 1);
    assert.deepEqual(await popped, { key: queue, element: 'job' }, 'BLPOP was not woken by the LPUSH');
  }],
  ['scan_match', async () => {
    const want = keysOfManySlots(prefix, 'scan', 60);
    for (const k of want) await r.set(k, 's');
    await r.set(key('scanx:other'), 'not matched');
    const got = new Set();
    // A cluster client has no cluster-wide SCAN: run each master's cursor to 0.
    for (const node of await masters()) {
      let cursor = '0';
      let rounds = 0;
      do {
        const reply = await node.scan(cursor, { MATCH: key('scan:*'), COUNT: 7 });
        reply.keys.forEach((k) => got.add(k));
        cursor = String(reply.cursor);
        assert.ok(++rounds < 100_000, 'SCAN never returned cursor 0');
      } while (cursor !== '0');
    }
    assert.deepEqual([...got].sort(), [...want].sort());
  }],
  ['eval', async () => {
    const script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
    assert.equal(await r.eval(script, { keys: [key('eval')], arguments: ['from-lua'] }), 'from-lua');
    assert.equal(await r.get(key('eval')), 'from-lua');
  }],
  ['hash', async () => {
    await r.del(key('hash'));
    assert.equal(await r.hSet(key('hash'), { f1: 'v1', f2: 'v2' }), 2);
    assert.deepEqual({ ...(await r.hGetAll(key('hash'))) }, { f1: 'v1', f2: 'v2' });
  }],
  ['sorted_set', async () => {
    await r.del(key('zset'));
    const members = [{ score: 1, value: 'a' }, { score: 2.5, value: 'b' }, { score: -3, value: 'c' }];
    assert.equal(await r.zAdd(key('zset'), members), 3);
    assert.deepEqual(await r.zRangeWithScores(key('zset'), 0, -1), [
      { value: 'c', score: -3 }, { value: 'a', score: 1 }, { value: 'b', score: 2.5 },
    ]);
  }],
  ['stream', async () => {
    const stream = key('stream');
    await r.del(stream);
    const first = await r.xAdd(stream, '*', { field: 'one' });
    const second = await r.xAdd(stream, '*', { field: 'two' });
    assert.equal(await r.xLen(stream), 2);
    const got = await r.xRange(stream, '-', '+');
    assert.deepEqual(got.map((e) => [e.id, { ...e.message }]), [[first, { field: 'one' }], [second, { field: 'two' }]]);
  }],
  ['one_megabyte_value', async () => {
    const value = randomBytes(1 << 20);
    assert.equal(await r.set(key('big'), value), 'OK');
    const got = await r.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }).get(key('big'));
    assert.ok(value.equals(got), `read back ${got?.length} bytes, not the 1 MiB written`);
  }],
  ['client_setname_getname', async () => {
    const name = `node-redis-${mode}-client`;
    // createCluster has no keyless CLIENT commands: ask the node's own client.
    const [node] = await masters();
    assert.equal(await node.clientSetName(name), 'OK');
    assert.equal(await node.clientGetName(), name);
  }],
  ['dialed_only_the_announced_address', async () => assertDialedOnly(host, port)],
];

console.log(`node-redis ${version}, mode ${mode}, Node.js ${process.version}`);
await runChecks(`node-redis ${mode}`, checks, async () => {
  await Promise.all(made.map((c) => c.close().catch(() => c.destroy())));
});
