#!/usr/bin/env python3
"""Clients that never read, for benches/memory.sh: the proxy's RSS before, at peak and after.

Two scenarios against a Redis-speaking proxy at --host:--port whose process is --pid:

  nonreader   SET bigkey to a --value-kib value, then one client pipelines --requests
              `GET bigkey` and reads nothing.
  subscriber  one client SUBSCRIBEs to a channel, reads the confirmation, then reads nothing,
              while a second client PUBLISHes --requests messages of --value-kib to it (in
              batches of 100, reading the publisher's replies).

Each run reads the proxy's VmRSS before, samples it every 0.2 s (the peak), waits until the
proxy has closed the silent client (its connection on the proxy's side is no longer
ESTABLISHED, seen with `ss`) or --limit-s seconds pass, then closes every socket of its own and
reads VmRSS every second for --settle-s seconds. It prints one line:

  result scenario=S closed=yes|no close_s=T sent=N before_kib=B peak_kib=P after_kib=A series=...

Bounded in time by --limit-s plus --settle-s. Standard library only.
"""

import argparse
import socket
import subprocess
import sys
import threading
import time


def rss_kib(pid: int) -> int:
    """VmRSS of the process, in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakSampler(threading.Thread):
    """Reads VmRSS every 0.2 s and keeps the largest value, until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_kib(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, rss_kib(self.pid))


def command(*args: bytes) -> bytes:
    """A RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    """One CRLF-terminated line from sock, with buf holding what was read past it."""
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    i = buf.index(b"\r\n")
    line = bytes(buf[:i])
    del buf[: i + 2]
    return line


def read_reply(sock: socket.socket, buf: bytearray) -> bytes:
    """One whole reply; returns its first line (enough for +OK, :N, -ERR and array headers)."""
    line = read_line(sock, buf)
    if line[:1] == b"$" and int(line[1:]) >= 0:
        need = int(line[1:]) + 2
        while len(buf) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            buf += chunk
        del buf[:need]
    elif line[:1] == b"*":
        for _ in range(max(int(line[1:]), 0)):
            read_reply(sock, buf)
    return line


def established(proxy_port: int, client_port: int) -> bool:
    """Whether the proxy still holds its side of the client's connection open."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established",
         f"( sport = :{proxy_port} and dport = :{client_port} )"],
        capture_output=True, text=True, check=False).stdout
    return bool(out.strip())


def send_some(sock: socket.socket, data: bytes) -> int:
    """Sends what the socket takes now, without blocking; returns the bytes sent."""
    try:
        return sock.send(data, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError:
        return -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["nonreader", "subscriber"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the proxy's process id")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--value-kib", type=int, required=True)
    parser.add_argument("--limit-s", type=float, default=60.0)
    parser.add_argument("--settle-s", type=int, default=15)
    args = parser.parse_args()

    value = b"v" * (args.value_kib * 1024)
    before = rss_kib(args.pid)
    sampler = PeakSampler(args.pid)
    sampler.start()
    started = time.monotonic()
    deadline = started + args.limit_s
    closed_at = None
    sent = 0
    own = []
    if args.scenario == "nonreader":
        setter = socket.create_connection((args.host, args.port), timeout=10)
        own.append(setter)
        buf = bytearray()
        setter.sendall(command(b"SET", b"bigkey", value))
        if read_reply(setter, buf) != b"+OK":
            print("SET bigkey failed", file=sys.stderr)
            return 1
        before = rss_kib(args.pid)
        silent = socket.create_connection((args.host, args.port), timeout=10)
        own.append(silent)
        client_port = silent.getsockname()[1]
        pending = command(b"GET", b"bigkey") * args.requests
        while time.monotonic() < deadline:
            if pending:
                n = send_some(silent, pending)
                if n < 0:
                    pending = b""
                elif n:
                    pending = pending[n:]
            if not established(args.port, client_port):
                closed_at = time.monotonic()
                break
            time.sleep(0.05 if pending else 0.2)
        sent = args.requests - len(pending) // len(command(b"GET", b"bigkey"))
    else:
        silent = socket.create_connection((args.host, args.port), timeout=10)
        own.append(silent)
        client_port = silent.getsockname()[1]
        buf = bytearray()
        silent.sendall(command(b"SUBSCRIBE", b"memory-bench"))
        if read_reply(silent, buf) != b"*3":
            print("SUBSCRIBE was not confirmed", file=sys.stderr)
            return 1
        publisher = socket.create_connection((args.host, args.port), timeout=10)
        own.append(publisher)
        pbuf = bytearray()
        batch = command(b"PUBLISH", b"memory-bench", value) * 100
        last_check = 0.0
        while sent < args.requests and time.monotonic() < deadline:
            publisher.sendall(batch)
            for _ in range(100):
                read_reply(publisher, pbuf)
            sent += 100
            now = time.monotonic()
            if now - last_check >= 0.2:
                last_check = now
                if not established(args.port, client_port):
                    closed_at = now
                    break
        # Past the last message the proxy may still close it (soft limit); wait within the limit.
        while closed_at is None and time.monotonic() < deadline:
            if not established(args.port, client_port):
                closed_at = time.monotonic()
                break
            time.sleep(0.2)
    for s in own:
        s.close()
    series = []
    for _ in range(args.settle_s):
        time.sleep(1)
        series.append(rss_kib(args.pid))
    sampler.done.set()
    sampler.join()
    after = rss_kib(args.pid)
    close_s = f"{closed_at - started:.1f}" if closed_at is not None else "NA"
    print(f"result scenario={args.scenario} closed={'yes' if closed_at else 'no'} close_s={close_s} "
          f"sent={sent} before_kib={before} peak_kib={max(sampler.peak, before)} after_kib={after} "
          f"series={','.join(str(round(k / 1024, 1)) for k in series)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
