// What the Node.js client scripts share: a record of every address the process dials, key
// helpers, and a runner that runs every check, prints `PASS name` or `FAIL name: why`, and exits
// non-zero when any failed. Import it before any client library connects.

import net from 'node:net';
import assert from 'node:assert/strict';
import calculateSlot from 'cluster-key-slot';

/** Every `host:port` a socket of this process connected to (TLS sockets included). */
export const dialed = [];

// Every TCP and TLS connection goes through Socket.prototype.connect, whichever helper
// (net.connect, net.createConnection, tls.connect) a library calls.
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function recordedConnect(...args) {
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  if (first !== null && typeof first === 'object') {
    if (first.path === undefined) {
      dialed.push(`${first.host ?? 'localhost'}:${first.port}`);
    }
  } else if (typeof first === 'number' || /^\d+$/.test(String(first))) {
    dialed.push(`${typeof args[1] === 'string' ? args[1] : 'localhost'}:${first}`);
  }
  return connect.apply(this, args);
};

/** How long a check waits for a message or a blocked pop, in milliseconds. */
export const WAIT_MS = 10_000;
/** How long one check may take before it is failed, in milliseconds. */
const CHECK_TIMEOUT_MS = 60_000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `count` keys named `prefix name:i`, asserting they hash to many slots. */
export function keysOfManySlots(prefix, name, count) {
  const keys = Array.from({ length: count }, (_, i) => `${prefix}${name}:${i}`);
  const slots = new Set(keys.map((k) => calculateSlot(k)));
  assert.ok(slots.size > count / 2, `the keys hash to only ${slots.size} slots`);
  return keys;
}

/** Fails unless every address dialed is `host:port`. */
export function assertDialedOnly(host, port) {
  const want = `${host}:${port}`;
  assert.ok(dialed.length > 0, 'no connection recorded');
  const others = [...new Set(dialed.filter((a) => a !== want))];
  assert.deepEqual(others, [], `dialed ${others} besides the announced ${want}`);
  console.log(`dialed ${dialed.length} times, always ${want}`);
}

function withTimeout(promise, name) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name} ran past ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs `checks` (pairs of name and async function) in order, then `close`, and exits the
 * process: 0 when every check passed, 1 otherwise.
 */
export async function runChecks(label, checks, close) {
  const failed = [];
  for (const [name, check] of checks) {
    try {
      await withTimeout(check(), name);
      console.log(`PASS ${name}`);
    } catch (e) {
      failed.push(name);
      console.log(`FAIL ${name}: ${e?.stack ?? e}`);
    }
  }
  try {
    await withTimeout(close(), 'close');
  } catch (e) {
    console.log(`closing the clients failed: ${e?.stack ?? e}`);
  }
  console.log(`${label}: ${checks.length - failed.length} of ${checks.length} checks pass`);
  process.exit(failed.length ? 1 : 0);
}

/** Host, port and mode from the command line, the mode one of `modes`. */
export function args(modes) {
  const [host, port, mode] = process.argv.slice(2);
  if (!host || !/^\d+$/.test(port ?? '') || !modes.includes(mode)) {
    console.error(`usage: node ${process.argv[1]} HOST PORT MODE (MODE: ${modes.join(', ')})`);
    process.exit(2);
  }
  return { host, port: Number(port), mode };
}
