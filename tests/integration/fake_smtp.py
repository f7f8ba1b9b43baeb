#!/usr/bin/env python3
"""fake_smtp — a scripted SMTP server on loopback, the next hop of the
delivery tests.

It records every transaction it completes (one JSON object per line in
--record: connection number, EHLO/HELO name, MAIL FROM, the accepted
recipients, the data as received after dot-unstuffing, and the reply
given to it), and answers as the options say, so a test can make a next
hop refuse a recipient, fail once then accept, stall, or advertise a
small SIZE. It prints "listening PORT" on stdout once it accepts.

Replies are scripted with RULEs "ADDRESS=CODE TEXT" (RCPT) and may be
given "once" (the first time only). Everything here is bounded: it exits
after --lifetime seconds.
"""
import argparse
import hashlib
import json
import socket
import sys
import threading
import time


def parse_rules(values):
    rules = {}
    for v in values or []:
        addr, _, reply = v.partition("=")
        rules[addr.lower()] = reply
    return rules


class Server:
    def __init__(self, args):
        self.args = args
        self.rcpt_rules = parse_rules(args.rcpt)
        self.rcpt_once = parse_rules(args.rcpt_once)
        self.lock = threading.Lock()
        self.connections = 0
        self.aborted = False  # --abort-data: the first message only
        self.record = open(args.record, "a", buffering=1) if args.record else None

    def log(self, obj):
        obj["t"] = round(time.time(), 4)
        if self.record:
            with self.lock:
                self.record.write(json.dumps(obj) + "\n")

    def serve(self, conn, number):
        f = conn.makefile("rb")
        out = conn.makefile("wb", buffering=0)

        def say(text):
            out.write(text.encode() + b"\r\n")

        a = self.args
        if a.greeting:
            say(a.greeting)
            if not a.greeting.startswith("220"):
                self.log({"conn": number, "event": "greeting_refused"})
                return
        else:
            say("220 fake.test ESMTP fake_smtp")
        helo = None
        mail = None
        rcpts = []
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = cmd[:4].upper()
            if verb == "EHLO":
                if a.no_ehlo:
                    say("502 5.5.2 EHLO not here")
                    continue
                helo = cmd[5:]
                ext = ["250-fake.test"]
                if not a.no_pipelining:
                    ext.append("250-PIPELINING")
                if a.size:
                    ext.append("250-SIZE %d" % a.size)
                ext.append("250-8BITMIME")
                ext.append("250 ENHANCEDSTATUSCODES")
                say("\r\n".join(ext))
            elif verb == "HELO":
                helo = cmd[5:]
                say("250 fake.test")
            elif verb == "MAIL":
                mail = cmd[10:].split(">")[0].lstrip("<")
                rcpts = []
                say("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = cmd[8:].split(">")[0].lstrip("<")
                key = addr.lower()
                with self.lock:
                    once = self.rcpt_once.pop(key, None)
                reply = once or self.rcpt_rules.get(key) or "250 2.1.5 ok"
                if reply.startswith("2"):
                    rcpts.append(addr)
                self.log({"conn": number, "event": "rcpt", "rcpt": addr, "reply": reply})
                say(reply)
            elif verb == "DATA":
                if not rcpts:
                    say("554 5.5.1 no valid recipients")
                    continue
                say("354 go ahead")
                data = []
                taken = total_taken = 0
                while True:
                    l = f.readline()
                    if not l:
                        return
                    taken += len(l)
                    total_taken += len(l)
                    if a.abort_data and total_taken >= a.abort_data and not self.aborted:
                        self.aborted = True
                        # A server that gives up in the middle of a body.
                        say("421 4.3.0 fake.test going away mid-message")
                        self.log({"conn": number, "event": "aborted_data"})
                        return
                    if a.slow_data and taken >= 65536:
                        time.sleep(a.slow_data)  # a slow reader: the sender waits
                        taken = 0
                    if l == b".\r\n":
                        break
                    if l.startswith(b"."):
                        l = l[1:]
                    data.append(l)
                if a.data_delay:
                    time.sleep(a.data_delay)
                reply = a.data_reply or "250 2.0.0 queued"
                body = b"".join(data)
                # Bodies made of numbered lines ("L000000 " and 60 letters,
                # test_delivery's) are checked whole: their count, order
                # and content.
                numbered = [l for l in data if l[:1] == b"L" and l[1:7].isdigit()]
                expected = [b"L%06d %s\r\n" % (i, b"abcdefghij" * 6) for i in range(len(numbered))]
                self.log({"conn": number, "event": "message", "helo": helo, "from": mail,
                          "rcpts": rcpts, "data": body.decode("utf-8", "replace")[:65536],
                          "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                          "numbered": len(numbered), "numbered_ok": numbered == expected,
                          "reply": reply})
                say(reply)
            elif verb == "RSET":
                mail, rcpts = None, []
                say("250 2.0.0 ok")
            elif verb == "QUIT":
                say("221 2.0.0 bye")
                return
            elif verb == "NOOP":
                say("250 2.0.0 ok")
            else:
                say("502 5.5.2 unknown")

    def handle(self, conn, number):
        try:
            self.serve(conn, number)
        except OSError:
            pass
        finally:
            conn.close()

    def run(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.args.address, self.args.port))
        s.listen(128)
        s.settimeout(0.5)
        print("listening %d" % s.getsockname()[1], flush=True)
        end = time.time() + self.args.lifetime
        while time.time() < end:
            try:
                conn, _ = s.accept()
            except socket.timeout:
                continue
            # Replies are written one by one: without this, Nagle holds each
            # behind the ACK of the one before.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                number = self.connections
            self.log({"conn": number, "event": "connect"})
            threading.Thread(target=self.handle, args=(conn, number), daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--address", default="127.0.0.1", help="a loopback address to listen on")
    p.add_argument("--record", help="append one JSON object per event to this file")
    p.add_argument("--rcpt", action="append", help="ADDRESS=REPLY for RCPT, always")
    p.add_argument("--rcpt-once", action="append", help="ADDRESS=REPLY for RCPT, the first time")
    p.add_argument("--greeting", help="the greeting line instead of 220")
    p.add_argument("--data-reply", help="the reply to the final dot")
    p.add_argument("--data-delay", type=float, default=0, help="seconds before that reply")
    p.add_argument("--size", type=int, default=0, help="advertise SIZE N")
    p.add_argument("--abort-data", type=int, default=0,
                   help="answer 421 and close after this many octets of the first message's data")
    p.add_argument("--slow-data", type=float, default=0,
                   help="sleep this many seconds after each 64 KiB of message data")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--no-ehlo", action="store_true", help="answer EHLO with 502")
    p.add_argument("--lifetime", type=float, default=300, help="exit after this many seconds")
    Server(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
