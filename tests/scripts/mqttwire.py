"""A tiny MQTT 3.1.1 / 5.0 packet encoder and decoder for the end-to-end
tests: raw bytes, so a test can send exactly what it means (including what a
well-behaved client library refuses to send) and see every reason code the
broker answers with.

Only what the tests use is here: CONNECT, SUBSCRIBE, PUBLISH and the QoS
acknowledgements, PINGREQ and DISCONNECT out; CONNACK, SUBACK, PUBLISH, the
acknowledgements, PINGRESP and DISCONNECT in.
"""

import struct

V311 = 4
V5 = 5

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

NAMES = {
    CONNECT: "connect",
    CONNACK: "connack",
    PUBLISH: "publish",
    PUBACK: "puback",
    PUBREC: "pubrec",
    PUBREL: "pubrel",
    PUBCOMP: "pubcomp",
    SUBSCRIBE: "subscribe",
    SUBACK: "suback",
    UNSUBSCRIBE: "unsubscribe",
    UNSUBACK: "unsuback",
    PINGREQ: "pingreq",
    PINGRESP: "pingresp",
    DISCONNECT: "disconnect",
    15: "auth",
}

# Property identifiers (MQTT 5.0, 2.2.2.2).
PROP_SESSION_EXPIRY = 0x11
PROP_WILL_DELAY = 0x18
PROP_RECEIVE_MAXIMUM = 0x21


class ProtocolViolation(Exception):
    """The broker sent bytes that are not a packet this decoder knows."""


def varint(n):
    """The Variable Byte Integer encoding of n."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def string(text):
    data = text.encode() if isinstance(text, str) else bytes(text)
    return struct.pack("!H", len(data)) + data


def properties(props):
    """props: list of (identifier, kind, value), kind in u8/u16/u32/str."""
    body = bytearray()
    for ident, kind, value in props:
        body += varint(ident)
        if kind == "u8":
            body += struct.pack("!B", value)
        elif kind == "u16":
            body += struct.pack("!H", value)
        elif kind == "u32":
            body += struct.pack("!I", value)
        else:
            body += string(value)
    return varint(len(body)) + bytes(body)


def packet(kind, flags, body):
    return bytes([(kind << 4) | flags]) + varint(len(body)) + bytes(body)


def connect(version, client_id, clean=True, keepalive=60, username=None,
            password=None, will=None, session_expiry=None):
    """will: dict with topic, payload, qos, retain and (5.0) delay."""
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will.get("qos", 0) << 3)
        if will.get("retain"):
            flags |= 0x20
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = bytearray(string("MQTT") + bytes([version, flags]))
    body += struct.pack("!H", keepalive)
    if version == V5:
        props = []
        if session_expiry is not None:
            props.append((PROP_SESSION_EXPIRY, "u32", session_expiry))
        body += properties(props)
    body += string(client_id)
    if will is not None:
        if version == V5:
            wprops = []
            if will.get("delay"):
                wprops.append((PROP_WILL_DELAY, "u32", will["delay"]))
            body += properties(wprops)
        body += string(will["topic"])
        body += string(will.get("payload", "").encode())
    if username is not None:
        body += string(username)
    if password is not None:
        body += string(password.encode() if isinstance(password, str) else password)
    return packet(CONNECT, 0, body)


def subscribe(version, packet_id, filters):
    """filters: list of (filter, qos)."""
    body = bytearray(struct.pack("!H", packet_id))
    if version == V5:
        body += properties([])
    for topic_filter, qos in filters:
        body += string(topic_filter) + bytes([qos])
    return packet(SUBSCRIBE, 0x02, body)


def publish(version, topic, payload, qos=0, retain=False, packet_id=None, dup=False):
    flags = (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = bytearray(string(topic))
    if qos:
        body += struct.pack("!H", packet_id)
    if version == V5:
        body += properties([])
    body += payload if isinstance(payload, (bytes, bytearray)) else payload.encode()
    return packet(PUBLISH, flags, body)


def ack(kind, packet_id):
    """PUBACK, PUBREC, PUBREL or PUBCOMP with success."""
    return packet(kind, 0x02 if kind == PUBREL else 0, struct.pack("!H", packet_id))


def pingreq():
    return packet(PINGREQ, 0, b"")


def disconnect(version, reason=0):
    if version == V5 and reason:
        return packet(DISCONNECT, 0, bytes([reason]))
    return packet(DISCONNECT, 0, b"")


class Reader:
    """Cuts a byte stream into packets."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data

    def next(self):
        """(type, flags, body) of the next whole packet, or None."""
        if len(self.buf) < 2:
            return None
        length = 0
        shift = 0
        pos = 1
        while True:
            if pos >= len(self.buf):
                return None
            byte = self.buf[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolViolation("remaining length longer than 4 bytes")
        if len(self.buf) < pos + length:
            return None
        first = self.buf[0]
        body = bytes(self.buf[pos:pos + length])
        del self.buf[:pos + length]
        return first >> 4, first & 0x0F, body


def skip_properties(body, at):
    length = 0
    shift = 0
    while True:
        byte = body[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return at + length


def describe(version, kind, flags, body):
    """A dict saying what an incoming packet holds."""
    name = NAMES.get(kind, "unknown-%d" % kind)
    out = {"packet": name}
    if kind == CONNACK:
        out["session_present"] = bool(body[0] & 1)
        out["code"] = body[1]
    elif kind == SUBACK:
        at = 2
        if version == V5:
            at = skip_properties(body, at)
        out["packet_id"] = struct.unpack("!H", body[:2])[0]
        out["codes"] = list(body[at:])
    elif kind == UNSUBACK:
        out["packet_id"] = struct.unpack("!H", body[:2])[0]
    elif kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        out["packet_id"] = struct.unpack("!H", body[:2])[0]
        out["code"] = body[2] if len(body) > 2 else 0
    elif kind == PUBLISH:
        qos = (flags >> 1) & 3
        (topic_len,) = struct.unpack("!H", body[:2])
        at = 2 + topic_len
        out["topic"] = body[2:at].decode(errors="replace")
        out["qos"] = qos
        out["retain"] = bool(flags & 1)
        out["dup"] = bool(flags & 8)
        if qos:
            out["packet_id"] = struct.unpack("!H", body[at:at + 2])[0]
            at += 2
        if version == V5:
            at = skip_properties(body, at)
        out["payload"] = body[at:].decode(errors="replace")
    elif kind == DISCONNECT:
        out["code"] = body[0] if body else 0
    return out
