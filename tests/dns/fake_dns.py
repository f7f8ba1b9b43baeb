#!/usr/bin/python3
"""tests/dns/fake_dns.py — a tiny authoritative DNS server over UDP on
127.0.0.1, for tests/unit/test_dns.c (needs python3-dnslib: tools/install-deps).

    fake_dns.py [--port N] [--log] [--zone FILE] [RECORD ...]

It binds 127.0.0.1:N (0, the default: a free port), prints "port N" on
one line to stdout once it can answer, and serves until its standard
input closes (the test holds the other end, so a test that dies takes
the server with it).

A zone is one record a line (from FILE, or each RECORD argument);
'#' starts a comment:

    example.test  MX 10 mx1.example.test
    mx1.example.test  A 127.0.0.1
    mx1.example.test  AAAA ::1
    null.test     MX 0 .            a null MX (RFC 7505)
    broken.test   SERVFAIL          every query for the name: SERVFAIL
    silent.test   SILENT            every query for the name: no answer

A name in the zone without records of the type asked for gets an empty
answer (NODATA); a name not in the zone gets NXDOMAIN. Names are
compared without case and trailing dot.

With --log, every query is logged to stderr as "query NAME TYPE".
"""
import argparse
import os
import select
import socket
import sys

try:
    from dnslib import AAAA, MX, QTYPE, RCODE, RR, A, DNSRecord
except ImportError:
    print("fake_dns.py: python3-dnslib is missing (run tools/install-deps)", file=sys.stderr)
    sys.exit(3)


def norm(name):
    return str(name).rstrip(".").lower()


def load(lines):
    zone = {}  # name -> list of (type, value)
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].split()
        if not line:
            continue
        if len(line) < 2:
            sys.exit(f"fake_dns.py: zone line {number}: want NAME TYPE [DATA]")
        name, kind, data = norm(line[0]), line[1].upper(), line[2:]
        if kind == "MX" and len(data) == 2:
            value = MX(data[1], int(data[0]))
        elif kind == "A" and len(data) == 1:
            value = A(data[0])
        elif kind == "AAAA" and len(data) == 1:
            value = AAAA(data[0])
        elif kind in ("SERVFAIL", "SILENT") and not data:
            value = None
        else:
            sys.exit(f"fake_dns.py: zone line {number}: cannot read {' '.join(line)!r}")
        zone.setdefault(name, []).append((kind, value))
    return zone


def answer(zone, request):
    qname = request.q.qname
    qtype = QTYPE[request.q.qtype]
    records = zone.get(norm(qname))
    reply = request.reply()
    if records is None:
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    kinds = {kind for kind, _ in records}
    if "SILENT" in kinds:
        return None
    if "SERVFAIL" in kinds:
        reply.header.rcode = RCODE.SERVFAIL
        return reply
    for kind, value in records:
        if kind == qtype:
            reply.add_answer(RR(qname, getattr(QTYPE, kind), rdata=value, ttl=60))
    return reply


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", action="store_true")
    parser.add_argument("--zone")
    parser.add_argument("records", nargs="*")
    args = parser.parse_args()
    lines = list(args.records)
    if args.zone:
        with open(args.zone, encoding="utf-8") as f:
            lines += f.readlines()
    zone = load(lines)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    print(f"port {sock.getsockname()[1]}", flush=True)
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 512):
            return  # the test is gone
        if sock not in ready:
            continue
        data, peer = sock.recvfrom(4096)
        try:
            request = DNSRecord.parse(data)
        except Exception:  # not DNS: no answer, as a server would
            continue
        if args.log:
            print(f"query {norm(request.q.qname)} {QTYPE[request.q.qtype]}", file=sys.stderr,
                  flush=True)
        reply = answer(zone, request)
        if reply is not None:
            sock.sendto(reply.pack(), peer)


if __name__ == "__main__":
    main()
