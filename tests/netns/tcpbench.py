#!/usr/bin/env python3
"""Bulk TCP transfer for the netns tests (iperf3 is not a dependency).

  tcpbench.py recv --bind ADDR --port P [--ready FILE] [--json FILE]
  tcpbench.py send --to ADDR --port P --seconds S [--cc bbr]

The receiver takes one connection, counts bytes until the sender closes,
and prints one JSON object: total bytes, duration from the first byte,
the average rate, the rate after a warm-up (--warmup-s, default 1 s, to
leave out slow start) and per-100-ms samples. Rates are goodput, in
10^6 bit/s, measured where the data arrives.
"""
import argparse
import json
import socket
import sys
import time


def recv(a):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.bind, a.port))
    srv.listen(1)
    if a.ready:
        open(a.ready, "w").close()
    srv.settimeout(a.accept_timeout_s)
    conn, _ = srv.accept()
    srv.close()
    conn.settimeout(a.idle_timeout_s)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    first = None
    samples = []  # (t since first byte, bytes so far)
    next_sample = 0.0
    while True:
        n = conn.recv_into(view)
        now = time.monotonic()
        if n == 0:
            break
        if first is None:
            first = now
        total += n
        t = now - first
        if t >= next_sample:
            samples.append((t, total))
            next_sample = t + 0.1
    end = time.monotonic()
    conn.close()
    if first is None:
        print(json.dumps({"bytes": 0, "error": "no data"}))
        return 1
    dur = end - first
    samples.append((dur, total))
    warm = [s for s in samples if s[0] >= a.warmup_s]
    steady = None
    if len(warm) >= 2 and warm[-1][0] > warm[0][0]:
        steady = (warm[-1][1] - warm[0][1]) * 8 / (warm[-1][0] - warm[0][0]) / 1e6
    out = {
        "bytes": total,
        "seconds": round(dur, 3),
        "mbit_avg": round(total * 8 / dur / 1e6, 2) if dur > 0 else None,
        "mbit_after_warmup": round(steady, 2) if steady is not None else None,
        "warmup_s": a.warmup_s,
        "samples": [[round(t, 3), b] for t, b in samples],
    }
    text = json.dumps(out)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def send(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, a.cc.encode())
    s.settimeout(10)
    s.connect((a.to, a.port))
    chunk = b"\0" * (1 << 20)
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(30)
    s.recv(1)  # wait for the receiver to close: all data delivered
    s.close()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--bind", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--ready", help="create this file once listening")
    r.add_argument("--json", help="also write the result here")
    r.add_argument("--warmup-s", type=float, default=1.0)
    r.add_argument("--accept-timeout-s", type=float, default=20)
    r.add_argument("--idle-timeout-s", type=float, default=10)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--cc", help="congestion control for this socket (default: the netns sysctl)")
    a = p.parse_args()
    return recv(a) if a.cmd == "recv" else send(a)


if __name__ == "__main__":
    sys.exit(main())
