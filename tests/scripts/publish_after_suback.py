#!/usr/bin/env python3
"""Rounds of: a fresh subscriber subscribes (QoS 1) to a topic of its own,
and the moment its SUBACK arrives, one of several publisher connections
(spread over the broker's cores) publishes one QoS 1 message there. The
subscriber must get it: a publish that follows the SUBACK in time follows
the subscription.

With --retained the order is the other way round: one connection
publishes a retained QoS 1 message, and the moment its PUBACK arrives
another connection (often on the other core) subscribes to that topic; it
must get the retained message: an acknowledged retained publish is stored
on every core.

Prints one JSON line: {"rounds": N, "lost": [round, ...]}; exits 0 when
nothing was lost, 1 when something was (the message on stderr; it stops
after --max-lost losses), 2 on any other failure. Every socket wait is
bounded (--timeout).
"""

import argparse
import json
import os
import socket
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqttwire  # noqa: E402

V = mqttwire.V311


def fail(message, code=2):
    sys.stderr.write("publish_after_suback: %s\n" % message)
    sys.exit(code)


class Conn:
    def __init__(self, port, client_id, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.reader = mqttwire.Reader()
        self.sock.sendall(mqttwire.connect(V, client_id))
        kind, _, body = self.next()
        if kind != mqttwire.CONNACK or body[1] != 0:
            fail("%s: no accepting CONNACK: %r" % (client_id, (kind, body)))

    def next(self):
        """The next packet; socket.timeout when none comes in time."""
        while True:
            packet = self.reader.next()
            if packet is not None:
                return packet
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self.reader.feed(data)

    def close(self):
        try:
            self.sock.sendall(mqttwire.disconnect(V))
        except OSError:
            pass
        self.sock.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--publishers", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--max-lost", type=int, default=3)
    parser.add_argument("--retained", action="store_true")
    args = parser.parse_args()
    if args.retained:
        retained_rounds(args)
        return
    try:
        publishers = [Conn(args.port, "after-suback-pub-%d" % i, args.timeout)
                      for i in range(args.publishers)]
        lost = []
        rounds = 0
        for n in range(args.rounds):
            if len(lost) >= args.max_lost:
                break
            rounds += 1
            topic = "after-suback/%d" % n
            sub = Conn(args.port, "after-suback-sub-%d" % n, args.timeout)
            sub.sock.sendall(mqttwire.subscribe(V, 1, [(topic, 1)]))
            kind, _, _ = sub.next()
            if kind != mqttwire.SUBACK:
                fail("round %d: %s instead of SUBACK" % (n, mqttwire.NAMES.get(kind)))
            pub = publishers[n % len(publishers)]
            pub.sock.sendall(mqttwire.publish(V, topic, b"round-%d" % n, qos=1, packet_id=1))
            kind, _, _ = pub.next()
            if kind != mqttwire.PUBACK:
                fail("round %d: %s instead of PUBACK" % (n, mqttwire.NAMES.get(kind)))
            try:
                kind, flags, body = sub.next()
                got = mqttwire.describe(V, kind, flags, body)
                if got.get("payload") != "round-%d" % n:
                    fail("round %d: unexpected %r" % (n, got))
            except socket.timeout:
                lost.append(n)
            sub.close()
        for pub in publishers:
            pub.close()
    except (OSError, ConnectionError) as e:
        fail("%s: %s" % (type(e).__name__, e))
    print(json.dumps({"rounds": rounds, "lost": lost}))
    sys.stdout.flush()
    if lost:
        fail("%d of %d messages published right after the SUBACK never came: rounds %s"
             % (len(lost), rounds, lost), 1)


def expect(conn, kind, n):
    got, _, _ = conn.next()
    if got != kind:
        fail("round %d: %s instead of %s"
             % (n, mqttwire.NAMES.get(got), mqttwire.NAMES.get(kind)))


def retained_rounds(args):
    try:
        conns = [Conn(args.port, "after-puback-%d" % i, args.timeout)
                 for i in range(args.publishers)]
        lost = []
        rounds = 0
        for n in range(args.rounds):
            if len(lost) >= args.max_lost:
                break
            rounds += 1
            topic = "after-puback/%d" % n
            pub = conns[n % len(conns)]
            sub = conns[(n + 1 + n // len(conns)) % len(conns)]
            if sub is pub:
                sub = conns[(n + 1) % len(conns)]
            pub.sock.sendall(mqttwire.publish(V, topic, b"kept-%d" % n, qos=1,
                                              retain=True, packet_id=1))
            expect(pub, mqttwire.PUBACK, n)
            sub.sock.sendall(mqttwire.subscribe(V, 1, [(topic, 1)]))
            expect(sub, mqttwire.SUBACK, n)
            try:
                kind, flags, body = sub.next()
                got = mqttwire.describe(V, kind, flags, body)
                if got.get("payload") != "kept-%d" % n:
                    fail("round %d: unexpected %r" % (n, got))
                if kind == mqttwire.PUBLISH and flags & 0x06:
                    packet_id = int.from_bytes(body[2 + len(topic):4 + len(topic)], "big")
                    sub.sock.sendall(mqttwire.ack(mqttwire.PUBACK, packet_id))
            except socket.timeout:
                lost.append(n)
        for conn in conns:
            conn.close()
    except (OSError, ConnectionError) as e:
        fail("%s: %s" % (type(e).__name__, e))
    print(json.dumps({"rounds": rounds, "lost": lost}))
    sys.stdout.flush()
    if lost:
        fail("%d of %d retained messages acknowledged to their publisher were not "
             "there for a subscriber right after: rounds %s" % (len(lost), rounds, lost), 1)


if __name__ == "__main__":
    main()
