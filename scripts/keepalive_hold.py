#!/usr/bin/env python3
"""keepalive_hold.py: open N HTTP/1.1 keep-alive connections, fetch one
response on each (checking its length and, with --sha256, its digest), then
hold them all open and idle until SIGTERM/SIGINT (at most --hold seconds).

Prints `held N` (or `held N failed M`) on stdout once every connection has
its response, so a script can measure the server while the connections
idle. Bounded: at most --conns connections, each given --timeout seconds.

  keepalive_hold.py --addr 10.200.5.2 --port 80 --path /f64k --conns 2000
"""

import argparse
import errno
import hashlib
import os
import selectors
import signal
import socket
import sys
import time


def parse_head(buf):
    """(content_length, head_len) once the head is complete, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1.1 200"):
        raise ValueError(f"status line {head[0]!r}")
    length = None
    for line in head[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    if length is None:
        raise ValueError("no Content-Length")
    return length, end + 4


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.head = None
        self.hash = hashlib.sha256()
        self.got = 0
        self.sent = False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--path", required=True)
    ap.add_argument("--conns", type=int, required=True)
    ap.add_argument("--batch", type=int, default=100, help="connections set up at once")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole set-up")
    ap.add_argument("--sha256", help="expected digest of each body")
    ap.add_argument("--hold", type=float, default=600.0, help="most seconds to hold them")
    a = ap.parse_args()
    if not 0 < a.conns <= 100_000:
        sys.exit("keepalive_hold.py: --conns must be 1 to 100000")

    done = False

    def stop(*_):
        nonlocal done
        done = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    req = (
        f"GET {a.path} HTTP/1.1\r\nHost: {a.addr}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    sel = selectors.DefaultSelector()
    held, failed, started, active = [], 0, 0, 0
    deadline = time.monotonic() + a.timeout
    errors = {}
    while (started < a.conns or active) and time.monotonic() < deadline and not done:
        while started < a.conns and active < a.batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((a.addr, a.port))
            started += 1
            if err not in (0, errno.EINPROGRESS):
                # Refused before a packet left: an unconnected socket would
                # read as writable and fail later with a misleading EPIPE.
                what = os.strerror(err)
                if err == errno.EADDRNOTAVAIL:
                    what += " (no free local port: earlier connections' TIME-WAIT holds them)"
                errors[what] = errors.get(what, 0) + 1
                failed += 1
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ, Conn(s))
            active += 1
        for key, ev in sel.select(timeout=0.5):
            c = key.data
            try:
                if not c.sent and ev & selectors.EVENT_WRITE:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, "connect")
                    c.sock.sendall(req)
                    c.sent = True
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                if not ev & selectors.EVENT_READ:
                    continue
                data = c.sock.recv(1 << 20)
                if not data:
                    raise OSError("closed before the whole response")
                if c.head is None:
                    c.buf += data
                    h = parse_head(c.buf)
                    if h is None:
                        continue
                    c.head = h
                    data = bytes(c.buf[h[1]:])
                    c.buf = bytearray()
                c.hash.update(data)
                c.got += len(data)
                if c.got > c.head[0]:
                    raise OSError("more bytes than Content-Length")
                if c.got == c.head[0]:
                    sel.unregister(c.sock)
                    active -= 1
                    if a.sha256 and c.hash.hexdigest() != a.sha256:
                        raise ValueError("body sha256 differs")
                    held.append(c.sock)
            except (OSError, ValueError) as e:
                errors[str(e)] = errors.get(str(e), 0) + 1
                try:
                    sel.unregister(c.sock)
                except (KeyError, ValueError):
                    pass
                c.sock.close()
                active -= 1
                failed += 1
    failed += a.conns - len(held) - failed
    for what, n in errors.items():
        print(f"keepalive_hold.py: {n} connection(s): {what}", file=sys.stderr)
    print(f"held {len(held)}" + (f" failed {failed}" if failed else ""), flush=True)
    # Hold until told to stop (a signal), at most --hold seconds.
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(max(1, int(a.hold)))
    while not done:
        signal.pause()
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
