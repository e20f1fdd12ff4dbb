"""Reads of a hot set through respgate with redis-py 8's client-side cache, against the same
reads without it, while a writer changes the hot set; then the proxy's memory per tracked key.
Run by benches/client_cache.sh, which starts the cluster and the proxy.

    client_cache.py --port P --pid PID --nodes N1,N2,N3 [--hot 1000] [--reads 100000]
                    [--writes-per-s 20] [--memory-keys 100000]

Prints one "result" line per run (reads/s, p50/p99 in microseconds, hit rate), then one
"memory" line.
"""
import argparse
import random
import threading
import time

import redis
from redis.cache import CacheConfig


def gets_served(nodes):
    total = 0
    for port in nodes:
        stats = redis.Redis(port=port).info("commandstats")
        total += stats.get("cmdstat_get", {}).get("calls", 0)
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def writer(port, keys, per_s, stop):
    client = redis.Redis(port=port)
    n = 0
    while not stop.is_set():
        client.set(random.choice(keys), f"w{n}")
        n += 1
        time.sleep(1 / per_s)


def run(label, client, keys, reads, nodes, port, per_s):
    stop = threading.Event()
    thread = threading.Thread(target=writer, args=(port, keys, per_s, stop), daemon=True)
    for key in keys:  # warm: every key read once
        client.get(key)
    before = gets_served(nodes)
    thread.start()
    latencies = []
    start = time.perf_counter()
    for _ in range(reads):
        key = random.choice(keys)
        t = time.perf_counter_ns()
        client.get(key)
        latencies.append(time.perf_counter_ns() - t)
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    served = gets_served(nodes) - before
    latencies.sort()
    p50 = latencies[len(latencies) // 2] / 1000
    p99 = latencies[len(latencies) * 99 // 100] / 1000
    hit = max(0.0, 1 - served / reads)
    print(
        f"result {label}: {reads / elapsed:,.0f} reads/s  p50 {p50:.1f} us  p99 {p99:.1f} us  "
        f"hit rate {hit:.4f} ({served} of {reads} reads reached the nodes)",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--nodes", required=True)
    parser.add_argument("--hot", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=100000)
    parser.add_argument("--writes-per-s", type=float, default=20)
    parser.add_argument("--memory-keys", type=int, default=100000)
    args = parser.parse_args()
    nodes = [int(p) for p in args.nodes.split(",")]
    keys = [f"hot:{i}" for i in range(args.hot)]
    setup = redis.Redis(port=args.port)
    for key in keys:
        setup.set(key, "v" * 32)

    cached = redis.Redis(
        port=args.port, protocol=3, cache_config=CacheConfig(max_size=args.hot * 2)
    )
    run("cache on ", cached, keys, args.reads, nodes, args.port, args.writes_per_s)
    cached.close()
    plain = redis.Redis(port=args.port, protocol=3)
    run("cache off", plain, keys, args.reads, nodes, args.port, args.writes_per_s)
    plain.close()

    # Memory: one reader caches memory-keys distinct keys (absent keys are cached too).
    time.sleep(1)
    before = rss_kib(args.pid)
    reader = redis.Redis(
        port=args.port, protocol=3, cache_config=CacheConfig(max_size=args.memory_keys * 2)
    )
    for i in range(args.memory_keys):
        reader.get(f"mem:{i}")
    time.sleep(1)
    after = rss_kib(args.pid)
    tracked = setup.info("stats").get("tracking_total_keys", 0)
    per_key = (after - before) * 1024 / max(tracked, 1)
    print(
        f"memory: {tracked} keys tracked, proxy RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
        f"{per_key:.0f} bytes per tracked key",
        flush=True,
    )


if __name__ == "__main__":
    main()
