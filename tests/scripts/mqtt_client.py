#!/usr/bin/env python3
"""One MQTT client for the end-to-end tests, driven line by line.

Commands come on stdin, one JSON object a line; what happens goes to stdout,
one JSON object a line ("event": ...), flushed at once, so the Rust test
decides what to do next and bounds every wait itself.

Backends:
  paho  paho-mqtt 1.6 (MQTT 3.1.1 or 5.0, over TCP or WebSocket)
  raw   the packets of mqttwire.py over TCP or over a `websockets`
        connection: sends exactly what it is told (e.g. packets over the
        broker's Maximum Packet Size) and reports every reason code

Commands:
  {"cmd": "connect", "id": ..., "clean": true, "expiry": N, "keepalive": N,
   "username": ..., "password": ...,
   "will": {"topic", "payload", "qos", "retain", "delay"}}
  {"cmd": "subscribe", "filters": [[FILTER, QOS], ...]}
  {"cmd": "publish", "topic", "payload" | "size": N, "qos", "retain"}
  {"cmd": "disconnect"}                  clean DISCONNECT (reason 0)
  {"cmd": "exit"}

Events:
  ready | connack {code, session_present} | connect_error {error}
  suback {codes} | published {packet_id, code} (QoS 0: code 0 once written)
  message {topic, payload, qos, retain, dup}
  server_disconnect {code}               the broker sent DISCONNECT
  closed {why}                           the connection is gone

The process ends on "exit", at the end of stdin, or after --max-seconds
(exit 3, with a message on stderr).
"""

import argparse
import asyncio
import json
import os
import queue
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqttwire  # noqa: E402

OUT_LOCK = threading.Lock()


def emit(event, **fields):
    fields["event"] = event
    line = json.dumps(fields)
    with OUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fail(message, code=1):
    sys.stderr.write("mqtt_client: %s\n" % message)
    sys.stderr.flush()
    os._exit(code)


def payload_of(cmd):
    if "size" in cmd:
        return b"x" * int(cmd["size"])
    return cmd.get("payload", "").encode()


def stdin_lines(put):
    """Reads commands (a thread); None marks the end of stdin."""
    for line in sys.stdin:
        line = line.strip()
        if line:
            try:
                put(json.loads(line))
            except ValueError as e:
                fail("a command that is not JSON: %r (%s)" % (line, e))
    put(None)


# ----- paho ---------------------------------------------------------------


def code_of(value):
    """An int from a paho result (int or ReasonCodes)."""
    if value is None:
        return None
    return getattr(value, "value", value) if not isinstance(value, int) else value


class Paho:
    def __init__(self, args):
        import paho.mqtt.client as mqtt

        self.mqtt = mqtt
        self.args = args
        self.client = None
        self.v5 = args.version == "5"

    def command(self, cmd):
        kind = cmd["cmd"]
        if kind == "connect":
            self.connect(cmd)
        elif kind == "subscribe":
            self.need_client()
            filters = [(f, int(q)) for f, q in cmd["filters"]]
            rc, _ = self.client.subscribe(filters)
            if rc != 0:
                emit("error", during="subscribe", rc=rc)
        elif kind == "publish":
            self.need_client()
            info = self.client.publish(
                cmd["topic"], payload_of(cmd), qos=int(cmd.get("qos", 0)),
                retain=bool(cmd.get("retain", False)))
            if info.rc != 0:
                emit("error", during="publish", rc=info.rc)
        elif kind == "disconnect":
            self.need_client()
            self.client.disconnect()
        else:
            fail("the paho backend has no command %r" % kind)

    def need_client(self):
        if self.client is None:
            fail("a command before connect")

    def connect(self, cmd):
        mqtt = self.mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self.client is not None and self.client.is_connected():
            fail("connect while connected: disconnect first")
        clean = bool(cmd.get("clean", True))
        kwargs = {
            "client_id": cmd.get("id", ""),
            "protocol": mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            "transport": self.args.transport,
        }
        if not self.v5:
            kwargs["clean_session"] = clean
        client = mqtt.Client(**kwargs)
        if self.args.transport == "websockets":
            client.ws_set_options(path=self.args.ws_path)
        self.install(client)
        will = cmd.get("will")
        if will:
            props = None
            if self.v5 and will.get("delay"):
                props = Properties(PacketTypes.WILLMESSAGE)
                props.WillDelayInterval = int(will["delay"])
            client.will_set(will["topic"], will.get("payload", ""),
                            qos=int(will.get("qos", 0)),
                            retain=bool(will.get("retain", False)),
                            properties=props)
        if cmd.get("username") is not None:
            client.username_pw_set(cmd["username"], cmd.get("password"))
        keepalive = int(cmd.get("keepalive", 60))
        self.client = client
        try:
            if self.v5:
                props = Properties(PacketTypes.CONNECT)
                if cmd.get("expiry") is not None:
                    props.SessionExpiryInterval = int(cmd["expiry"])
                client.connect(self.args.host, self.args.port, keepalive,
                               clean_start=clean, properties=props)
            else:
                client.connect(self.args.host, self.args.port, keepalive)
        except Exception as e:  # refused, reset, bad upgrade: all reported
            emit("connect_error", error="%s: %s" % (type(e).__name__, e))

    def install(self, client):
        """Callbacks, and two shims: paho 1.6 reads the reason code of a
        PUBACK and of a short DISCONNECT but does not pass it on."""
        codes = {}

        def on_connect(c, u, flags, rc, properties=None):
            emit("connack", code=code_of(rc),
                 session_present=bool(flags.get("session present")))

        def on_subscribe(c, u, mid, granted, properties=None):
            emit("suback", codes=[code_of(g) for g in granted])

        def on_publish(c, u, mid):
            emit("published", packet_id=mid, code=codes.pop(mid, 0))

        def on_message(c, u, msg):
            emit("message", topic=msg.topic,
                 payload=msg.payload.decode(errors="replace"),
                 qos=msg.qos, retain=bool(msg.retain), dup=bool(msg.dup))

        def on_disconnect(c, u, rc, properties=None):
            emit("closed", why="paho rc %s" % code_of(rc))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_publish = on_publish
        client.on_message = on_message
        client.on_disconnect = on_disconnect

        handle_ack = client._handle_pubackcomp
        handle_disconnect = client._handle_disconnect

        def pubackcomp(cmd):
            packet = client._in_packet["packet"]
            if len(packet) > 2:
                codes[int.from_bytes(packet[:2], "big")] = packet[2]
            return handle_ack(cmd)

        def disconnect():
            packet = client._in_packet["packet"]
            emit("server_disconnect", code=packet[0] if len(packet) else 0)
            return handle_disconnect()

        client._handle_pubackcomp = pubackcomp
        client._handle_disconnect = disconnect

    def run(self, deadline):
        commands = queue.Queue()
        threading.Thread(target=stdin_lines, args=(commands.put,), daemon=True).start()
        emit("ready")
        while True:
            if time.monotonic() > deadline:
                fail("gave up after --max-seconds %s" % self.args.max_seconds, 3)
            try:
                while True:
                    cmd = commands.get_nowait()
                    if cmd is None or cmd.get("cmd") == "exit":
                        return
                    self.command(cmd)
            except queue.Empty:
                pass
            if self.client is None:
                time.sleep(0.01)
                continue
            rc = self.client.loop(timeout=0.01)
            if rc == self.mqtt.MQTT_ERR_NO_CONN:
                time.sleep(0.01)


# ----- raw ----------------------------------------------------------------


class Raw:
    def __init__(self, args):
        self.args = args
        self.version = mqttwire.V5 if args.version == "5" else mqttwire.V311
        self.conn = None
        self.reader_task = None
        self.next_id = 0
        self.pubrec_codes = {}

    def packet_id(self):
        self.next_id = self.next_id % 65535 + 1
        return self.next_id

    async def open(self):
        if self.args.transport == "websockets":
            import websockets

            uri = "ws://%s:%d%s" % (self.args.host, self.args.port, self.args.ws_path)
            ws = await asyncio.wait_for(
                websockets.connect(uri, subprotocols=["mqtt"], max_size=None,
                                   compression=None, open_timeout=5),
                timeout=10)
            if ws.subprotocol != "mqtt":
                await ws.close()
                raise RuntimeError("the server chose subprotocol %r, not mqtt" % ws.subprotocol)
            return WsConn(ws)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.args.host, self.args.port), timeout=10)
        return TcpConn(reader, writer)

    async def command(self, cmd):
        kind = cmd["cmd"]
        v = self.version
        if kind == "connect":
            if self.conn is not None:
                await self.conn.close()
            try:
                self.conn = await self.open()
            except Exception as e:
                emit("connect_error", error="%s: %s" % (type(e).__name__, e))
                return
            self.next_id = 0
            self.pubrec_codes = {}
            self.reader_task = asyncio.ensure_future(self.read(self.conn))
            await self.send(mqttwire.connect(
                v, cmd.get("id", ""), clean=bool(cmd.get("clean", True)),
                keepalive=int(cmd.get("keepalive", 60)),
                username=cmd.get("username"), password=cmd.get("password"),
                will=cmd.get("will"), session_expiry=cmd.get("expiry")))
        elif kind == "subscribe":
            filters = [(f, int(q)) for f, q in cmd["filters"]]
            await self.send(mqttwire.subscribe(v, self.packet_id(), filters))
        elif kind == "publish":
            qos = int(cmd.get("qos", 0))
            pid = self.packet_id() if qos else None
            await self.send(mqttwire.publish(
                v, cmd["topic"], payload_of(cmd), qos=qos,
                retain=bool(cmd.get("retain", False)), packet_id=pid))
            if not qos:
                emit("published", packet_id=0, code=0)
        elif kind == "disconnect":
            await self.send(mqttwire.disconnect(v))
            await self.conn.close()
        else:
            fail("the raw backend has no command %r" % kind)

    async def send(self, data):
        if self.conn is None:
            fail("a command before connect")
        try:
            await self.conn.send(data)
        except Exception as e:  # the broker may close first: reported
            emit("send_error", error="%s: %s" % (type(e).__name__, e))

    async def read(self, conn):
        reader = mqttwire.Reader()
        why = "end of stream"
        try:
            while True:
                data = await conn.recv()
                if not data:
                    break
                reader.feed(data)
                while True:
                    packet = reader.next()
                    if packet is None:
                        break
                    await self.on_packet(*packet)
        except Exception as e:
            why = "%s: %s" % (type(e).__name__, e)
        emit("closed", why=why)

    async def on_packet(self, kind, flags, body):
        v = self.version
        p = mqttwire.describe(v, kind, flags, body)
        if kind == mqttwire.CONNACK:
            emit("connack", code=p["code"], session_present=p["session_present"])
        elif kind == mqttwire.SUBACK:
            emit("suback", codes=p["codes"])
        elif kind == mqttwire.PUBLISH:
            emit("message", topic=p["topic"], payload=p["payload"], qos=p["qos"],
                 retain=p["retain"], dup=p["dup"])
            if p["qos"] == 1:
                await self.send(mqttwire.ack(mqttwire.PUBACK, p["packet_id"]))
            elif p["qos"] == 2:
                await self.send(mqttwire.ack(mqttwire.PUBREC, p["packet_id"]))
        elif kind == mqttwire.PUBREL:
            await self.send(mqttwire.ack(mqttwire.PUBCOMP, p["packet_id"]))
        elif kind == mqttwire.PUBACK:
            emit("published", packet_id=p["packet_id"], code=p["code"])
        elif kind == mqttwire.PUBREC:
            if p["code"] >= 0x80:
                emit("published", packet_id=p["packet_id"], code=p["code"])
            else:
                self.pubrec_codes[p["packet_id"]] = p["code"]
                await self.send(mqttwire.ack(mqttwire.PUBREL, p["packet_id"]))
        elif kind == mqttwire.PUBCOMP:
            code = self.pubrec_codes.pop(p["packet_id"], 0)
            emit("published", packet_id=p["packet_id"], code=max(code, p["code"]))
        elif kind == mqttwire.DISCONNECT:
            emit("server_disconnect", code=p["code"])
        elif kind == mqttwire.PINGRESP:
            emit("pingresp")
        else:
            emit("unexpected", packet=p["packet"])

    async def main(self, deadline):
        loop = asyncio.get_running_loop()
        commands = asyncio.Queue()
        threading.Thread(
            target=stdin_lines,
            args=(lambda c: loop.call_soon_threadsafe(commands.put_nowait, c),),
            daemon=True).start()
        emit("ready")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("gave up after --max-seconds %s" % self.args.max_seconds, 3)
            try:
                cmd = await asyncio.wait_for(commands.get(), timeout=left)
            except asyncio.TimeoutError:
                continue
            if cmd is None or cmd.get("cmd") == "exit":
                break
            await self.command(cmd)
        if self.conn is not None:
            await self.conn.close()

    def run(self, deadline):
        asyncio.run(self.main(deadline))


class TcpConn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    async def send(self, data):
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), timeout=10)

    async def recv(self):
        return await self.reader.read(65536)

    async def close(self):
        self.writer.close()


class WsConn:
    def __init__(self, ws):
        self.ws = ws

    async def send(self, data):
        await asyncio.wait_for(self.ws.send(bytes(data)), timeout=10)

    async def recv(self):
        import websockets

        try:
            data = await self.ws.recv()
        except websockets.ConnectionClosed as e:
            raise RuntimeError("websocket closed: code %s" % e.code) from None
        if isinstance(data, str):
            raise RuntimeError("a text frame: %r" % data)
        return data

    async def close(self):
        await asyncio.wait_for(self.ws.close(), timeout=5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["paho", "raw"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", choices=["311", "5"], default="311")
    parser.add_argument("--transport", choices=["tcp", "websockets"], default="tcp")
    parser.add_argument("--ws-path", default="/mqtt")
    parser.add_argument("--max-seconds", type=float, default=60)
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_seconds
    backend = Paho(args) if args.backend == "paho" else Raw(args)
    try:
        backend.run(deadline)
    except SystemExit:
        raise
    except BaseException as e:
        fail("%s: %s" % (type(e).__name__, e))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
