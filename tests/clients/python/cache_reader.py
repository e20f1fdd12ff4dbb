# A redis-py 8 reader with its client-side cache on (RESP3, CLIENT TRACKING), driven line by line
# on stdin by tests/client_side_caching.rs; one line out per line in:
#     python cache_reader.py HOST PORT
#   get KEY                   -> the value, or (nil)
#   wait KEY VALUE LIMIT_MS   -> "ok MS" once a read gives VALUE ((nil) for none), or
#                                "stale VALUE" when LIMIT_MS passed first
#   reads KEY N               -> "done" after N reads
#   size                      -> the number of entries in the cache
import sys
import time

import redis
from redis.cache import CacheConfig

host, port = sys.argv[1], int(sys.argv[2])
client = redis.Redis(host=host, port=port, protocol=3, cache_config=CacheConfig())


def show(value):
    return "(nil)" if value is None else value.decode()


print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    try:
        if words[0] == "get":
            print(show(client.get(words[1])), flush=True)
        elif words[0] == "wait":
            key, want, limit = words[1], words[2], float(words[3]) / 1000
            start = time.monotonic()
            while True:
                seen = show(client.get(key))
                elapsed = time.monotonic() - start
                if seen == want:
                    print(f"ok {elapsed * 1000:.2f}", flush=True)
                    break
                if elapsed > limit:
                    print(f"stale {seen}", flush=True)
                    break
                time.sleep(0.0002)
        elif words[0] == "reads":
            for _ in range(int(words[2])):
                client.get(words[1])
            print("done", flush=True)
        elif words[0] == "size":
            print(client.get_cache().size, flush=True)
        else:
            print(f"error unknown request {words[0]}", flush=True)
    except Exception as error:  # reported to the test, which fails naming it
        print(f"error {type(error).__name__}: {error}".replace("\n", " "), flush=True)
