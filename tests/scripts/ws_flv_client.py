#!/usr/bin/python3
"""A WebSocket-FLV viewer: connects to ws://HOST:PORT/{app}/{name}.flv,
checks the FLV it gets frame by frame, and prints one JSON summary line.

Each binary frame must hold one piece of FLV: the first the 13-byte file
header ("FLV", version 1, header size 9, PreviousTagSize0 = 0), every
further one exactly one tag (11-byte head, data, PreviousTagSize =
11 + data size). The first video tag after the AVC sequence header must be
a keyframe. Whatever is wrong goes to "errors"; the exit code is 0 when
the connection went as the options asked (see --tags), else 1.

    ws_flv_client.py --url ws://127.0.0.1:8080/live/a.flv [--tags N]

Without --tags it reads until the server closes (and reports the close
code); with --tags N it closes the connection itself after N tags.
"""

import argparse
import asyncio
import json
import sys

import websockets

TAG_HEAD = 11
PREVIOUS_TAG_SIZE = 4
AUDIO, VIDEO, SCRIPT = 8, 9, 18


class FlvCheck:
    """What the frames said, and what was wrong with them."""

    def __init__(self):
        self.frames = 0
        self.header = None
        self.tags = {"audio": 0, "video": 0, "script": 0}
        self.video_sequence_header = False
        self.audio_sequence_header = False
        self.first_video_keyframe = None
        self.video_codec_id = None
        self.bytes = 0
        self.errors = []

    def error(self, text):
        if len(self.errors) < 20:
            self.errors.append(f"frame {self.frames}: {text}")

    def frame(self, data):
        self.frames += 1
        self.bytes += len(data)
        if not isinstance(data, bytes):
            self.error("a text frame")
            return
        if self.header is None:
            self.file_header(data)
        else:
            self.tag(data)

    def file_header(self, data):
        if len(data) != 13:
            self.error(f"the file header frame has {len(data)} bytes, not 13")
        if data[:3] != b"FLV":
            self.error(f"signature {data[:3]!r}")
            self.header = {}
            return
        flags = data[4] if len(data) > 4 else 0
        self.header = {
            "version": data[3] if len(data) > 3 else None,
            "audio": bool(flags & 0x04),
            "video": bool(flags & 0x01),
            "offset": int.from_bytes(data[5:9], "big"),
            "previous_tag_size0": int.from_bytes(data[9:13], "big"),
        }
        if self.header["version"] != 1:
            self.error(f"version {self.header['version']}")
        if self.header["offset"] != 9:
            self.error(f"header size {self.header['offset']}")
        if self.header["previous_tag_size0"] != 0:
            self.error("PreviousTagSize0 is not 0")

    def tag(self, data):
        if len(data) < TAG_HEAD + PREVIOUS_TAG_SIZE:
            self.error(f"a frame of {len(data)} bytes is no tag")
            return
        kind = data[0] & 0x1F
        size = int.from_bytes(data[1:4], "big")
        if len(data) != TAG_HEAD + size + PREVIOUS_TAG_SIZE:
            self.error(
                f"frame of {len(data)} bytes for a tag of {size} data bytes "
                "(one tag per frame)"
            )
            return
        previous = int.from_bytes(data[-4:], "big")
        if previous != TAG_HEAD + size:
            self.error(f"PreviousTagSize {previous}, wanted {TAG_HEAD + size}")
        body = data[TAG_HEAD : TAG_HEAD + size]
        if kind == VIDEO:
            self.tags["video"] += 1
            self.video(body)
        elif kind == AUDIO:
            self.tags["audio"] += 1
            if len(body) >= 2 and (body[0] >> 4) == 10 and body[1] == 0:
                self.audio_sequence_header = True
        elif kind == SCRIPT:
            self.tags["script"] += 1
        else:
            self.error(f"tag type {kind}")

    def video(self, body):
        if not body:
            self.error("an empty video tag")
            return
        frame_type, codec = body[0] >> 4, body[0] & 0x0F
        self.video_codec_id = codec
        # AVC: the AVCPacketType byte says sequence header (0) or NALUs (1).
        is_header = codec == 7 and len(body) > 1 and body[1] == 0
        if is_header:
            self.video_sequence_header = True
            return
        if self.first_video_keyframe is None:
            if not self.video_sequence_header:
                self.error("a video frame before the sequence header")
            self.first_video_keyframe = frame_type == 1

    def summary(self):
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "header": self.header,
            "tags": self.tags,
            "video_codec_id": self.video_codec_id,
            "video_sequence_header": self.video_sequence_header,
            "audio_sequence_header": self.audio_sequence_header,
            "first_video_keyframe": self.first_video_keyframe,
            "errors": self.errors,
        }


async def run(args):
    check = FlvCheck()
    closed_by = None
    async with websockets.connect(
        args.url, max_size=None, ping_interval=None, open_timeout=10
    ) as ws:
        try:
            while True:
                check.frame(await ws.recv())
                tags = sum(check.tags.values())
                if args.tags is not None and tags >= args.tags:
                    closed_by = "client"
                    await ws.close()
                    break
        except websockets.ConnectionClosed:
            closed_by = "server"
        summary = check.summary()
        summary["closed_by"] = closed_by
        summary["close_code"] = ws.close_code
        summary["close_reason"] = ws.close_reason
    return summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--tags", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    try:
        summary = asyncio.run(asyncio.wait_for(run(args), args.max_seconds))
    except asyncio.TimeoutError:
        print(json.dumps({"failure": f"no end within {args.max_seconds}s"}))
        return 1
    except Exception as e:  # the test shows what went wrong
        print(json.dumps({"failure": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(summary), flush=True)
    wanted = "client" if args.tags is not None else "server"
    return 0 if summary["closed_by"] == wanted else 1


if __name__ == "__main__":
    sys.exit(main())
