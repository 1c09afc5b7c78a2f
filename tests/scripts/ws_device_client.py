"""A device on Shoal's WebSocket device API, driven by the `websockets` library.

Usage: ws_device_client.py URL [--header 'Name: value'] [--send text:HELLO]
       [--send hex:00ff] [--send frag:a,b,c] [--expect N] [--timeout SECONDS]

Connects, prints {"event": "open"}, sends what --send says in order
(`frag:` sends one text message in several frames), then prints every
message the server sends ({"event": "message", "text": ...} or
{"event": "message", "hex": ...}) until N came, then closes with 1000 and
prints {"event": "closed", "code": ..., "reason": ...}. A refused upgrade
prints {"event": "refused", "status": ...}. Every wait is bounded by
--timeout.
"""

import argparse
import asyncio
import json
import sys

import websockets


def emit(**fields):
    print(json.dumps(fields), flush=True)


async def main(args):
    headers = []
    for header in args.header:
        name, _, value = header.partition(":")
        headers.append((name.strip(), value.strip()))
    try:
        ws = await asyncio.wait_for(
            websockets.connect(args.url, extra_headers=headers, max_size=None),
            args.timeout,
        )
    except websockets.exceptions.InvalidStatusCode as e:
        emit(event="refused", status=e.status_code)
        return
    emit(event="open")
    try:
        for item in args.send:
            kind, _, value = item.partition(":")
            if kind == "text":
                await ws.send(value)
            elif kind == "hex":
                await ws.send(bytes.fromhex(value))
            elif kind == "frag":
                await ws.send(iter(value.split(",")))
            else:
                raise SystemExit(f"unknown --send kind {kind!r}")
        for _ in range(args.expect):
            message = await asyncio.wait_for(ws.recv(), args.timeout)
            if isinstance(message, str):
                emit(event="message", text=message)
            else:
                emit(event="message", hex=message.hex())
        await asyncio.wait_for(ws.close(code=1000, reason="done"), args.timeout)
        emit(event="closed", code=ws.close_code, reason=ws.close_reason)
    except websockets.exceptions.ConnectionClosed as e:
        emit(event="closed", code=e.code, reason=e.reason)
    except asyncio.TimeoutError:
        emit(event="timeout")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--send", action="append", default=[])
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
