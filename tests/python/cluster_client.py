"""redis-py's RedisCluster, with its defaults, through respgate: set, get and mget.

Run by tests/wire.rs with the virtual environment of scripts/ensure-python.sh:
    python cluster_client.py HOST PORT
Exits 0 when every check passed; any failure raises, so the exit status is non-zero and the
traceback says which check failed.
"""

import sys

import redis
from redis.cluster import RedisCluster


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    # Defaults only: redis-py 8 speaks RESP3 unless told otherwise.
    client = RedisCluster(host=host, port=port)
    try:
        print(f"redis-py {redis.__version__}, protocol {client.get_connection_kwargs().get('protocol')}")
        print("nodes:", [n.name for n in client.get_nodes()])
        assert client.ping() is True

        keys = [f"py:key:{i}" for i in range(100)]
        for i, key in enumerate(keys):
            assert client.set(key, f"py-value-{i}") is True, key
        for i, key in enumerate(keys):
            value = client.get(key)
            assert value == f"py-value-{i}".encode(), (key, value)
        assert client.get("py:missing") is None

        # Keys of many slots: redis-py splits by slot itself and sends one MGET per slot group.
        values = client.mget_nonatomic(keys + ["py:missing"])
        assert values == [f"py-value-{i}".encode() for i in range(100)] + [None], values

        # Keys of one slot (a hash tag): one MGET as the application wrote it.
        tagged = [f"{{py:tag}}:{i}" for i in range(10)]
        assert client.mset_nonatomic({key: f"t{i}" for i, key in enumerate(tagged)}) is not None
        values = client.mget(tagged)
        assert values == [f"t{i}".encode() for i in range(10)], values
    finally:
        client.close()
    print("ok")


if __name__ == "__main__":
    main()
