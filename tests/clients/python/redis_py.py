"""redis-py through respgate: the operations an application does, in one of three modes.

Run by tests/clients.rs with the virtual environment of scripts/ensure-python.sh:
    python redis_py.py HOST PORT MODE
MODE is `resp2` (plain `Redis(protocol=2)`), `default` (plain `Redis()`: redis-py 8 says HELLO 3)
or `cluster` (`RedisCluster` with its defaults, discovering the topology the proxy announces).

Every check runs, and prints `PASS name` or `FAIL name: why`; the exit status is 1 when any
failed. Every address the process dials is recorded (Python's `socket.connect` audit event): a
cluster client must only ever dial the address the proxy announces, which the test sets to the
HOST:PORT given here.
"""

import os
import sys
import threading
import time
import traceback

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

# Every (host, port) any socket of this process connected to.
DIALED = []


def record_connects(event, args):
    if event == "socket.connect":
        DIALED.append(args[1])


sys.addaudithook(record_connects)

# How long a check waits for a message or a blocked pop before calling it lost, in seconds.
WAIT_S = 10.0


class Checks:
    """The checks against one client kind; `client()` makes a new connection (or cluster client)."""

    def __init__(self, host, port, mode):
        self.host, self.port, self.mode = host, port, mode
        self.cluster = mode == "cluster"
        # Keys of this run start with the prefix, so the modes never see each other's keys.
        self.prefix = f"py-{mode}:"
        self.made = []
        self.r = self.client()

    def client(self):
        if self.cluster:
            made = RedisCluster(host=self.host, port=self.port)
        elif self.mode == "resp2":
            made = redis.Redis(host=self.host, port=self.port, protocol=2)
        else:
            made = redis.Redis(host=self.host, port=self.port)
        self.made.append(made)
        return made

    def close(self):
        for made in self.made:
            made.close()

    def key(self, name):
        return f"{self.prefix}{name}"

    def keys_of_many_slots(self, name, count):
        keys = [self.key(f"{name}:{i}") for i in range(count)]
        slots = {key_slot(k.encode()) for k in keys}
        assert len(slots) > count // 2, f"the keys hash to only {len(slots)} slots"
        return keys

    # -- the checks, in the order they run -------------------------------------------------

    def check_protocol(self):
        """The client speaks the protocol the mode asks for."""
        if self.cluster:
            names = [n.name for n in self.r.get_nodes()]
            assert names == [f"{self.host}:{self.port}"], f"nodes discovered: {names}"
        if self.cluster:
            hello = self.r.execute_command("HELLO", target_nodes=self.r.get_random_node())
        else:
            hello = self.r.execute_command("HELLO")
        if isinstance(hello, list):  # RESP2 has no maps: a flat list of names and values
            hello = dict(zip(hello[::2], hello[1::2]))
        proto = hello.get(b"proto", hello.get("proto"))
        want = 2 if self.mode == "resp2" else 3
        assert proto == want, f"HELLO says proto {proto}, want {want}: {hello}"

    def check_set_get(self):
        keys = [self.key(f"k{i}") for i in range(100)]
        for i, key in enumerate(keys):
            assert self.r.set(key, f"value-{i}") is True, key
        for i, key in enumerate(keys):
            got = self.r.get(key)
            assert got == f"value-{i}".encode(), (key, got)
        assert self.r.get(self.key("missing")) is None

    def check_multi_slot_mget_mset_del(self):
        keys = self.keys_of_many_slots("multi", 40)
        values = {k: f"m{i}" for i, k in enumerate(keys)}
        missing = self.key("multi:missing")
        want = [f"m{i}".encode() for i in range(len(keys))] + [None]
        if self.cluster:
            # RedisCluster refuses keys of several slots in MGET/MSET: its split helpers.
            assert self.r.mset_nonatomic(values) is not None
            got = self.r.mget_nonatomic(keys + [missing])
            # Keys of one slot (a hash tag): one MGET as the application wrote it.
            tagged = [f"{{{self.prefix}tag}}:{i}" for i in range(10)]
            assert self.r.mset({k: f"t{i}" for i, k in enumerate(tagged)}) is True
            got_tagged = self.r.mget(tagged)
            assert got_tagged == [f"t{i}".encode() for i in range(10)], got_tagged
        else:
            # One MSET and one MGET over many slots: the proxy splits them.
            assert self.r.mset(values) is True
            got = self.r.mget(keys + [missing])
        assert got == want, got
        # RedisCluster splits DEL by slot itself; a plain client sends one DEL.
        deleted = self.r.delete(*keys, missing)
        assert deleted == len(keys), f"DEL deleted {deleted}, want {len(keys)}"
        assert self.r.exists(*keys) == 0

    def check_pipeline_of_200(self):
        keys = self.keys_of_many_slots("pipe", 100)
        pipe = self.r.pipeline(transaction=False)
        for i, key in enumerate(keys):
            pipe.set(key, f"p{i}")
        for key in keys:
            pipe.get(key)
        replies = pipe.execute()
        want = [True] * 100 + [f"p{i}".encode() for i in range(100)]
        assert replies == want, replies

    def check_multi_exec(self):
        counter = f"{{t}}{self.prefix}counter"
        note = f"{{t}}{self.prefix}note"
        pipe = self.r.pipeline(transaction=True)
        pipe.set(counter, 1).incr(counter).set(note, "done").get(note).get(counter)
        # RedisCluster's transactions return SET's reply unconverted (b"OK"), as they do against
        # Redis itself.
        replies = [True if r == b"OK" else r for r in pipe.execute()]
        assert replies == [True, 2, True, b"done", b"2"], replies

    def check_publish_subscribe(self):
        channel = self.key("channel")
        pubsub = self.client().pubsub()
        try:
            pubsub.subscribe(channel)
            deadline = time.monotonic() + WAIT_S
            got = None
            published = False
            while got is None and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=0.2)
                if message and message["type"] == "subscribe":
                    # Subscribed for sure: now a message has a subscriber.
                    receivers = self.r.publish(channel, "hello")
                    assert receivers == 1, f"PUBLISH reached {receivers} subscribers"
                    published = True
                elif message and message["type"] == "message":
                    got = message
            assert published, "no subscribe confirmation"
            assert got is not None, "the published message never arrived"
            assert got["channel"] == channel.encode() and got["data"] == b"hello", got
        finally:
            pubsub.close()

    def check_blpop_woken_by_lpush(self):
        key = self.key("queue")
        self.r.delete(key)
        blocker = self.client()
        popped = {}

        def pop():
            try:
                popped["reply"] = blocker.blpop([key], timeout=WAIT_S)
            except Exception as e:  # reported by the main thread
                popped["error"] = e

        thread = threading.Thread(target=pop)
        thread.start()
        # Give BLPOP time to reach the node and block; a pop that happens to start after the
        # push still passes, so this wait only makes the wake-up the likely path.
        time.sleep(0.5)
        assert self.r.lpush(key, "job") == 1
        thread.join(WAIT_S + 5)
        assert not thread.is_alive(), "BLPOP still blocked after the LPUSH"
        assert "error" not in popped, popped.get("error")
        reply = popped["reply"]
        assert reply is not None, "BLPOP timed out: the LPUSH did not wake it"
        assert tuple(reply) == (key.encode(), b"job"), reply

    def check_scan_match(self):
        want = set(self.keys_of_many_slots("scan", 60))
        for key in want:
            self.r.set(key, "s")
        self.r.set(self.key("scanx:other"), "not matched")
        pattern = self.key("scan:*")
        got = set()
        if self.cluster:
            # RedisCluster runs the cursor of every master it knows to 0.
            for key in self.r.scan_iter(match=pattern, count=7):
                got.add(key.decode())
        else:
            cursor, rounds = 0, 0
            while True:
                cursor, batch = self.r.scan(cursor, match=pattern, count=7)
                got.update(k.decode() for k in batch)
                rounds += 1
                assert rounds < 100_000, "SCAN never returned cursor 0"
                if cursor == 0:
                    break
        assert got == want, f"missing {sorted(want - got)[:5]}, extra {sorted(got - want)[:5]}"

    def check_eval(self):
        key = self.key("eval")
        script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"
        got = self.r.eval(script, 1, key, "from-lua")
        assert got == b"from-lua", got
        assert self.r.get(key) == b"from-lua"

    def check_hash(self):
        key = self.key("hash")
        self.r.delete(key)
        assert self.r.hset(key, mapping={"f1": "v1", "f2": "v2"}) == 2
        got = self.r.hgetall(key)
        assert got == {b"f1": b"v1", b"f2": b"v2"}, got

    def check_sorted_set(self):
        key = self.key("zset")
        self.r.delete(key)
        assert self.r.zadd(key, {"a": 1, "b": 2.5, "c": -3}) == 3
        got = self.r.zrange(key, 0, -1, withscores=True)
        pairs = [(member, float(score)) for member, score in got]
        assert pairs == [(b"c", -3.0), (b"a", 1.0), (b"b", 2.5)], got

    def check_stream(self):
        key = self.key("stream")
        self.r.delete(key)
        first = self.r.xadd(key, {"field": "one"})
        second = self.r.xadd(key, {"field": "two"})
        assert self.r.xlen(key) == 2
        got = self.r.xrange(key)
        assert [entry_id for entry_id, _ in got] == [first, second], got
        assert [fields for _, fields in got] == [{b"field": b"one"}, {b"field": b"two"}], got

    def check_one_megabyte_value(self):
        key = self.key("big")
        value = os.urandom(1 << 20)
        assert self.r.set(key, value) is True
        got = self.r.get(key)
        assert got == value, f"read back {len(got or b'')} bytes, not the 1 MiB written"

    def check_client_setname_getname(self):
        name = f"py-{self.mode}-client"
        assert self.r.client_setname(name) is True
        got = self.r.client_getname()
        assert got in (name, name.encode()), got

    def check_dialed_only_the_announced_address(self):
        self.close()
        want = (self.host, self.port)
        others = sorted({f"{h}:{p}" for h, p, *_ in DIALED if (h, p) != want})
        assert DIALED, "no connection recorded"
        assert not others, f"dialed {others} besides the announced {self.host}:{self.port}"
        print(f"dialed {len(DIALED)} times, always {self.host}:{self.port}")


def main():
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode not in ("resp2", "default", "cluster"):
        sys.exit(f"unknown mode {mode!r}: resp2, default or cluster")
    print(f"redis-py {redis.__version__}, mode {mode}")
    checks = Checks(host, port, mode)
    names = [n for n in dir(Checks) if n.startswith("check_")]
    # dir() sorts by name; run in the order of the class body instead.
    names.sort(key=lambda n: list(Checks.__dict__).index(n))
    failed = []
    for name in names:
        label = name.removeprefix("check_")
        try:
            getattr(checks, name)()
            print(f"PASS {label}")
        except Exception as e:  # every check runs, each failure is reported
            failed.append(label)
            print(f"FAIL {label}: {type(e).__name__}: {e}")
            traceback.print_exc()
    checks.close()
    print(f"redis-py {mode}: {len(names) - len(failed)} of {len(names)} checks pass")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
