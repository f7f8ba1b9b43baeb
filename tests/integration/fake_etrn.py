#!/usr/bin/env python3
"""fake_etrn — a scripted ETRN server (RFC 1985) on loopback, the far end
of ferry-etrn's tests.

It records every command line it receives in --record, as received (CRLF
removed), each connection opened by a line "# connection N", so a test can
compare the whole dialogue. It prints "listening PORT" on stdout once it
accepts.

Replies to ETRN are scripted per name with --reply 'NAME=REPLY', given
several times for successive requests for that name (one per connection
or repeat); the last one repeats. NAME is compared as sent, without
regard to case ("@domain" and "#queue" included). A REPLY of "stall"
never answers; "\\n" in a REPLY separates the lines of a multi-line reply.
A 421 reply closes the connection after it, as servers do. Everything is
bounded: it exits after --lifetime seconds.
"""
import argparse
import socket
import sys
import threading
import time


def lines_of(reply):
    return reply.replace("\\n", "\n").split("\n")


class Server:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.connections = 0
        self.replies = {}  # name -> remaining scripted replies
        for v in args.reply or []:
            name, _, reply = v.partition("=")
            self.replies.setdefault(name.lower(), []).append(reply)
        self.record = open(args.record, "a", buffering=1) if args.record else None

    def note(self, text):
        # Written before the reply is sent: once the client has its reply,
        # the record holds the command.
        if self.record:
            with self.lock:
                self.record.write(text + "\n")

    def etrn_reply(self, name):
        with self.lock:
            script = self.replies.get(name.lower())
            if script:
                return script.pop(0) if len(script) > 1 else script[0]
        return self.args.default_reply.replace("{name}", name)

    def serve(self, conn, number):
        f = conn.makefile("rb")
        a = self.args

        def say(reply):
            conn.sendall("".join(l + "\r\n" for l in lines_of(reply)).encode())

        say(a.greeting)
        if not a.greeting.startswith("220"):
            return
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
            self.note(cmd)
            verb, _, arg = cmd.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                if a.no_ehlo:
                    say("502 5.5.2 EHLO not here")
                    continue
                ext = ["250-fake-etrn.test greets " + arg]
                if not a.no_etrn_keyword:
                    ext.append("250-ETRN")
                ext.append("250-8BITMIME")
                ext.append("250 ENHANCEDSTATUSCODES")
                say("\n".join(ext))
            elif verb == "HELO":
                say("250 fake-etrn.test")
            elif verb == "ETRN":
                if not arg:
                    say("500 5.5.2 Syntax Error")
                    continue
                reply = self.etrn_reply(arg)
                if reply == "stall":
                    time.sleep(a.lifetime)
                    return
                say(reply)
                if reply.startswith("421"):
                    return
            elif verb == "QUIT":
                say("221 2.0.0 bye")
                return
            elif verb == "NOOP":
                say("250 2.0.0 ok")
            else:
                say("502 5.5.2 unknown command")

    def handle(self, conn, number):
        try:
            self.serve(conn, number)
        except OSError:
            pass
        finally:
            conn.close()

    def run(self):
        family = socket.AF_INET6 if ":" in self.args.address else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.args.address, self.args.port))
        s.listen(16)
        s.settimeout(0.2)
        print("listening %d" % s.getsockname()[1], flush=True)
        end = time.time() + self.args.lifetime
        while time.time() < end:
            try:
                conn, _ = s.accept()
            except socket.timeout:
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                number = self.connections
            self.note("# connection %d" % number)
            threading.Thread(target=self.handle, args=(conn, number), daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--address", default="127.0.0.1", help="a loopback address to listen on")
    p.add_argument("--record", help="append every command line received to this file")
    p.add_argument("--reply", action="append", metavar="NAME=REPLY",
                   help="the next reply to ETRN NAME; repeat for later requests")
    p.add_argument("--default-reply", default="250 2.0.0 OK, queuing for node {name} started",
                   help="the reply to a name not scripted ({name}: the name)")
    p.add_argument("--greeting", default="220 fake-etrn.test ESMTP fake_etrn",
                   help="the greeting (not 220: the connection is closed after it)")
    p.add_argument("--no-etrn-keyword", action="store_true",
                   help="leave ETRN out of the EHLO reply (ETRN is still answered)")
    p.add_argument("--no-ehlo", action="store_true", help="answer EHLO with 502 (HELO works)")
    p.add_argument("--lifetime", type=float, default=60, help="exit after this many seconds")
    Server(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
