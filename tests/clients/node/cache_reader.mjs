// A node-redis reader with its client-side cache on (RESP3, CLIENT TRACKING), driven line by
// line on stdin by tests/client_side_caching.rs; one line out per line in:
//     node cache_reader.mjs HOST PORT
//   get KEY                   -> the value, or (nil)
//   wait KEY VALUE LIMIT_MS   -> "ok MS" once a read gives VALUE ((nil) for none), or
//                                "stale VALUE" when LIMIT_MS passed first
//   reads KEY N               -> "done" after N reads
//   size                      -> the number of entries in the cache

import { createInterface } from 'node:readline';
import { createClient } from 'redis';

const [host, port] = process.argv.slice(2);
const client = createClient({
  socket: { host, port: Number(port) },
  RESP: 3,
  clientSideCache: { ttl: 0, maxEntries: 0 },
});
client.on('error', (e) => console.log(`error client: ${e?.message ?? e}`));
await client.connect();
const show = (value) => (value === null ? '(nil)' : String(value));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

console.log('ready');
for await (const line of createInterface({ input: process.stdin })) {
  const words = line.trim().split(/\s+/);
  try {
    if (words[0] === 'get') {
      console.log(show(await client.get(words[1])));
    } else if (words[0] === 'wait') {
      const [key, want, limit] = [words[1], words[2], Number(words[3])];
      const start = performance.now();
      for (;;) {
        const seen = show(await client.get(key));
        const elapsed = performance.now() - start;
        if (seen === want) {
          console.log(`ok ${elapsed.toFixed(2)}`);
          break;
        }
        if (elapsed > limit) {
          console.log(`stale ${seen}`);
          break;
        }
        await sleep(0.2);
      }
    } else if (words[0] === 'reads') {
      for (let i = 0; i < Number(words[2]); i += 1) {
        await client.get(words[1]);
      }
      console.log('done');
    } else if (words[0] === 'size') {
      console.log(String(client.clientSideCache.size()));
    } else {
      console.log(`error unknown request ${words[0]}`);
    }
  } catch (e) {
    console.log(`error ${String(e?.message ?? e).replace(/\n/g, ' ')}`);
  }
}
await client.close();
