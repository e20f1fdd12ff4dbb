// ioredis through respgate: the operations an application does, as a plain `Redis` over RESP2
// (`protocol: 2`) or with its default (ioredis 6 says HELLO 3), or as a `Cluster` with its
// defaults, discovering the topology the proxy announces. Run by tests/clients.rs:
//     node ioredis.mjs HOST PORT MODE        (MODE: resp2 | default | cluster)
// Prints PASS/FAIL per check; exits 1 when any failed. See harness.mjs.

import { args, assertDialedOnly, keysOfManySlots, runChecks, sleep, WAIT_MS } from './harness.mjs';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import Redis, { Cluster } from 'ioredis';

const { host, port, mode } = args(['resp2', 'default', 'cluster']);
const version = createRequire(import.meta.url)('ioredis/package.json').version;
const cluster = mode === 'cluster';
const prefix = `ioredis-${mode}:`;
const key = (name) => `${prefix}${name}`;
const made = [];

/** A new client: its own connection (plain) or its own cluster client. */
function client() {
  // No retries past a failure: a failed check should say so, not wait.
  const made1 = cluster
    ? new Cluster([{ host, port }], { redisOptions: { maxRetriesPerRequest: 1 } })
    : new Redis({ host, port, maxRetriesPerRequest: 1, ...(mode === 'resp2' ? { protocol: 2 } : {}) });
  made.push(made1);
  return made1;
}

const r = client();

/** Every master the client knows: `Redis` instances to run node-wide commands on. */
function masters() {
  return cluster ? r.nodes('master') : [r];
}

const checks = [
  ['protocol', async () => {
    if (cluster) {
      await r.ping();
      const nodes = r.nodes('all').map((n) => `${n.options.host}:${n.options.port}`);
      assert.deepEqual(nodes, [`${host}:${port}`], `nodes discovered: ${nodes}`);
    }
    // The default reply mapping flattens RESP3 maps into arrays, as RESP2 has them.
    const hello = await masters()[0].call('HELLO');
    assert.equal(hello[hello.indexOf('proto') + 1], mode === 'resp2' ? 2 : 3, `HELLO: ${hello}`);
  }],
  ['set_get', async () => {
    for (let i = 0; i < 100; i++) assert.equal(await r.set(key(`k${i}`), `value-${i}`), 'OK');
    for (let i = 0; i < 100; i++) assert.equal(await r.get(key(`k${i}`)), `value-${i}`);
    assert.equal(await r.get(key('missing')), null);
  }],
  ['multi_slot_mget_mset_del', async () => {
    // ioredis sends a multi-key command whole, to the node of its first key, in both modes:
    // the proxy splits it.
    const keys = keysOfManySlots(prefix, 'multi', 40);
    const pairs = Object.fromEntries(keys.map((k, i) => [k, `m${i}`]));
    assert.equal(await r.mset(pairs), 'OK');
    const got = await r.mget([...keys, key('multi:missing')]);
    assert.deepEqual(got, [...keys.map((_, i) => `m${i}`), null]);
    assert.equal(await r.del(...keys, key('multi:missing')), keys.length);
    assert.equal(await r.exists(...keys), 0);
  }],
  ['pipeline_of_200', async () => {
    const keys = keysOfManySlots(prefix, 'pipe', 100);
    const pipeline = r.pipeline();
    keys.forEach((k, i) => pipeline.set(k, `p${i}`));
    keys.forEach((k) => pipeline.get(k));
    const replies = await pipeline.exec();
    assert.equal(replies.length, 200);
    replies.forEach(([err], i) => assert.equal(err, null, `command ${i}: ${err}`));
    assert.deepEqual(replies.map(([, v]) => v), [...keys.map(() => 'OK'), ...keys.map((_, i) => `p${i}`)]);
  }],
  ['multi_exec', async () => {
    const counter = `{t}${prefix}counter`;
    const note = `{t}${prefix}note`;
    const replies = await r.multi().set(counter, 1).incr(counter).set(note, 'done').get(note).get(counter).exec();
    assert.deepEqual(replies, [[null, 'OK'], [null, 2], [null, 'OK'], [null, 'done'], [null, '2']]);
  }],
  ['publish_subscribe', async () => {
    const channel = key('channel');
    const subscriber = client();
    let timer;
    const received = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no message within ${WAIT_MS} ms`)), WAIT_MS);
      subscriber.on('message', (ch, message) => resolve([ch, message]));
    });
    await subscriber.subscribe(channel);
    assert.equal(await r.publish(channel, 'hello'), 1, 'PUBLISH reached no subscriber');
    try {
      assert.deepEqual(await received, [channel, 'hello']);
    } finally {
      clearTimeout(timer);
    }
  }],
  ['blpop_woken_by_lpush', async () => {
    const queue = key('queue');
    await r.del(queue);
    const blocker = client();
    const popped = blocker.blpop(queue, WAIT_MS / 1000);
    // Give BLPOP time to reach the node and block; a pop that happens to start after the push
    // still passes, so this wait only makes the wake-up the likely path.
    await sleep(500);
    assert.equal(await r.lpush(queue, 'job'), 1);
    assert.deepEqual(await popped, [queue, 'job'], 'BLPOP was not woken by the LPUSH');
  }],
  ['scan_match', async () => {
    const want = keysOfManySlots(prefix, 'scan', 60);
    for (const k of want) await r.set(k, 's');
    await r.set(key('scanx:other'), 'not matched');
    const got = new Set();
    // A Cluster client has no cluster-wide SCAN: run each master's cursor to 0.
    for (const node of masters()) {
      let cursor = '0';
      let rounds = 0;
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', key('scan:*'), 'COUNT', 7);
        keys.forEach((k) => got.add(k));
        cursor = next;
        assert.ok(++rounds < 100_000, 'SCAN never returned cursor 0');
      } while (cursor !== '0');
    }
    assert.deepEqual([...got].sort(), [...want].sort());
  }],
  ['eval', async () => {
    const script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
    assert.equal(await r.eval(script, 1, key('eval'), 'from-lua'), 'from-lua');
    assert.equal(await r.get(key('eval')), 'from-lua');
  }],
  ['hash', async () => {
    await r.del(key('hash'));
    assert.equal(await r.hset(key('hash'), { f1: 'v1', f2: 'v2' }), 2);
    assert.deepEqual(await r.hgetall(key('hash')), { f1: 'v1', f2: 'v2' });
  }],
  ['sorted_set', async () => {
    await r.del(key('zset'));
    assert.equal(await r.zadd(key('zset'), 1, 'a', 2.5, 'b', -3, 'c'), 3);
    assert.deepEqual(await r.zrange(key('zset'), 0, -1, 'WITHSCORES'), ['c', '-3', 'a', '1', 'b', '2.5']);
  }],
  ['stream', async () => {
    const stream = key('stream');
    await r.del(stream);
    const first = await r.xadd(stream, '*', 'field', 'one');
    const second = await r.xadd(stream, '*', 'field', 'two');
    assert.equal(await r.xlen(stream), 2);
    assert.deepEqual(await r.xrange(stream, '-', '+'), [[first, ['field', 'one']], [second, ['field', 'two']]]);
  }],
  ['one_megabyte_value', async () => {
    const value = randomBytes(1 << 20);
    assert.equal(await r.set(key('big'), value), 'OK');
    const got = await r.getBuffer(key('big'));
    assert.ok(value.equals(got), `read back ${got?.length} bytes, not the 1 MiB written`);
  }],
  ['client_setname_getname', async () => {
    const name = `ioredis-${mode}-client`;
    assert.equal(await r.client('SETNAME', name), 'OK');
    assert.equal(await r.client('GETNAME'), name);
  }],
  ['dialed_only_the_announced_address', async () => assertDialedOnly(host, port)],
];

console.log(`ioredis ${version}, mode ${mode}, Node.js ${process.version}`);
await runChecks(`ioredis ${mode}`, checks, async () => {
  await Promise.all(made.map((c) => c.quit().catch(() => c.disconnect())));
});
