#!/usr/bin/env python3
"""Hold many idle client connections open to a Redis-speaking server (for benches/load.sh).

Opens --clients TCP connections to --host:--port one at a time, sends one PING on each and
reads the reply (so that the server has accepted the connection and served it once; with
--no-ping it sends nothing), then prints one line "ready opened=N pong=N errors=N seconds=S"
on stdout and holds every connection open, sending nothing, until it receives SIGUSR1 or
SIGTERM or --hold-s seconds pass. Then it closes them all, prints "closed", and exits 0. It
exits 1 (after closing what it opened) if fewer than --clients connections answered +PONG
(were opened, with --no-ping). With --tls-ca FILE each connection speaks TLS, trusting the CAs
in FILE (the server's certificate must be valid for --host). Standard library only.
"""

import argparse
import collections
import resource
import signal
import socket
import ssl
import sys
import threading
import time


def raise_fd_limit(needed: int) -> None:
    """Raises the soft open-file limit to the hard limit when `needed` is above it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def read_reply_line(sock: socket.socket) -> bytes:
    """Reads up to the first CRLF (a PING reply is one line: +PONG or -ERR ...)."""
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        buf += chunk
    return buf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="socket timeout for each connect and PING reply")
    parser.add_argument("--no-ping", action="store_true",
                        help="send nothing on the connections (then they are only accepted)")
    parser.add_argument("--hold-s", type=float, default=120.0,
                        help="longest time to hold the connections before closing them")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="speak TLS, trusting the CA certificates in FILE")
    args = parser.parse_args()
    tls = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None

    raise_fd_limit(args.clients + 64)
    release = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: release.set())
    signal.signal(signal.SIGTERM, lambda *_: release.set())

    socks = []
    pong = 0
    errors: collections.Counter = collections.Counter()
    started = time.monotonic()
    try:
        for _ in range(args.clients):
            if release.is_set():
                break
            try:
                s = socket.create_connection((args.host, args.port), timeout=args.timeout_s)
                if tls is not None:
                    s = tls.wrap_socket(s, server_hostname=args.host)
            except OSError as e:
                errors[f"connect: {e.strerror or e}"] += 1
                continue
            socks.append(s)
            if args.no_ping:
                continue
            try:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                reply = read_reply_line(s)
            except OSError as e:
                reply = f"io: {e}".encode()
            if reply == b"+PONG\r\n":
                pong += 1
            else:
                key = reply.decode(errors="replace").strip() or "closed by server"
                errors[key] += 1
        elapsed = time.monotonic() - started
        print(f"ready opened={len(socks)} pong={pong} errors={sum(errors.values())} "
              f"seconds={elapsed:.2f}", flush=True)
        for what, n in errors.most_common(5):
            print(f"error {n}x {what}", file=sys.stderr, flush=True)
        release.wait(args.hold_s)
    finally:
        for s in socks:
            s.close()
        print("closed", flush=True)
    served = len(socks) if args.no_ping else pong
    return 0 if served == args.clients else 1


if __name__ == "__main__":
    sys.exit(main())
