"""The client side of benches/migrate.sh: loads the keys, measures a client's latency through
the proxy before and during each migration, and starts and watches each with `respgate
migrate`. Prints one table row per run."""

import argparse
import json
import os
import statistics
import subprocess
import threading
import time

import redis


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


class Client(threading.Thread):
    """Reads and writes through the proxy, one request at a time: a GET of a moving key, a SET
    of one, and an INCR of a key that stays; records each request's latency in microseconds
    with the phase it ran in."""

    def __init__(self, port, prefix, keys):
        super().__init__(daemon=True)
        self.conn = redis.Redis(port=port)
        self.prefix, self.keys = prefix, keys
        self.phase = "before"
        self.samples = {"before": [], "during": [], "after": []}
        self.errors = []
        self.stop = False

    def run(self):
        i = 0
        while not self.stop:
            i += 1
            key = f"{self.prefix}{(i * 7919) % self.keys}"
            # The big run reads keys of the prefix the client writes itself, so that the copier
            # (not the client's reads) moves the hashes, and MB/s is the copier's.
            read = ("GET", f"{self.prefix}new{i % 1000}") if self.prefix == "big:" else ("GET", key)
            for command in (read, ("SET", f"{self.prefix}new{i % 1000}", "x"), ("INCR", "stays")):
                start = time.perf_counter()
                try:
                    self.conn.execute_command(*command)
                except redis.RedisError as error:
                    self.errors.append(str(error))
                self.samples[self.phase].append((time.perf_counter() - start) * 1e6)


def migrate(args, *rest):
    command = [args.bin, "migrate", "--admin", args.admin, *rest]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def load(port, prefix, count, big_fields):
    conn = redis.Redis(port=port)
    pipe = conn.pipeline(transaction=False)
    if big_fields:
        for k in range(count):
            for start in range(0, big_fields, 5000):
                fields = {f"field:{n}": "v" * 32 for n in range(start, min(big_fields, start + 5000))}
                conn.hset(f"{prefix}{k}", mapping=fields)
        return
    for i in range(count):
        pipe.set(f"{prefix}{i}", "v" * 16)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def run(args, prefix, count, big_fields):
    label = f"{count:,} hashes of {big_fields:,} fields" if big_fields else f"{count:,} small keys"
    start = time.time()
    load(args.port, prefix, count, big_fields)
    print(f"loaded {label} through the proxy in {time.time() - start:.1f} s", flush=True)
    client = Client(args.port, prefix, count)
    client.start()
    time.sleep(3)
    client.phase = "during"
    began = time.perf_counter()
    migrate(args, "start", "--prefix", prefix, "--to", "archive", "--max-keys-per-s", str(args.max_keys_per_s))
    moving_from = moving_to = None
    while True:
        record = json.loads(migrate(args, "status", "--json"))
        now = time.perf_counter()
        if record["phase"] == "moving" and moving_from is None:
            moving_from = now
        if record["phase"] in ("verifying", "done") and moving_to is None:
            moving_to = now
        if record["phase"] in ("done", "aborted", "failed"):
            break
        time.sleep(0.05)
    took = time.perf_counter() - began
    moving = (moving_to or now) - (moving_from or began)
    client.phase = "after"
    time.sleep(1)
    client.stop = True
    client.join()
    if client.errors:
        print(f"client errors: {len(client.errors)}, first: {client.errors[0]}")
    before, during = client.samples["before"], client.samples["during"]
    moved = record["keys_moved"]
    print(
        f"| {label} | {record['phase']} | {took:.2f} s | {moving:.2f} s | {moved:,} | {moved / moving:,.0f} |"
        f" {record['bytes_moved'] / moving / 1e6:,.1f} |"
        f" {percentile(before, 0.5):.0f} / {percentile(before, 0.99):.0f} |"
        f" {percentile(during, 0.5):.0f} / {percentile(during, 0.99):.0f} |"
        f" {len(before) + len(during):,} | {len(client.errors)} |",
        flush=True,
    )
    migrate(args, "forget", "--id", record["id"])


def main():
    parser = argparse.ArgumentParser()
    for name in ("--port", "--small-keys", "--big-keys", "--big-fields", "--max-keys-per-s", "--pid"):
        parser.add_argument(name, type=int, required=True)
    for name in ("--admin", "--bin", "--source", "--target"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    print("| run | ended | took | of which moving | keys moved | keys/s moving | MB/s moving | client p50 / p99 before (µs) | during (µs) | requests | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    run(args, "small:", args.small_keys, 0)
    run(args, "big:", args.big_keys, args.big_fields)
    with open(f"/proc/{args.pid}/status") as status:
        rss = next(line for line in status if line.startswith("VmHWM"))
    print(f"respgate peak RSS: {rss.split(':')[1].strip()}")


if __name__ == "__main__":
    main()
