"""A loopback HTTP/1.1 responder: the outbound-call stand-in and the OTLP sink.

Written on bare asyncio instead of an ASGI server so that its own CPU cost
stays small on a two-core machine, where it competes with the measured app:
it reads one request (headers plus a ``Content-Length`` body), answers with a
fixed response and keeps the connection alive.

Usage: ``python -m bench.standin --port 18081 [--content-type ...] [--body ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal


class _Responder(asyncio.Protocol):
    """One keep-alive connection; pipelined requests are answered in order."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker)
                length = int(head[marker + 15 : line_end if line_end >= 0 else None].strip() or 0)
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            self._buffer = self._buffer[total:]
            assert self._transport is not None
            self._transport.write(self._response)


def build_response(body: bytes, content_type: str) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: "
        + content_type.encode()
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: keep-alive\r\n\r\n"
        + body
    )


async def serve(port: int, response: bytes) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Responder(response), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--body", default='{"id": 1, "name": "Mithril Ore", "count": 250}')
    args = parser.parse_args()
    # An empty body is a valid (empty) OTLP protobuf response.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, build_response(args.body.encode(), args.content_type)))


if __name__ == "__main__":
    main()
