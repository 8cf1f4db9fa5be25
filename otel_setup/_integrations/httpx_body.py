"""A response body seen as the caller reads it, passed through unchanged.

Known APIs read what the headers do not say (GW2's 403 reason, a GenAI call's
token usage) from the body, without reading it themselves: the caller's own
reads (``response.read()``, ``iter_bytes()``, streaming) feed a sink, chunk by
chunk, and the sink hears once when the body ended, was closed early or failed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

__all__ = ["BodySink", "observe_body"]

_log = logging.getLogger("otel_setup")


class BodySink(Protocol):
    """Receives a response body's raw chunks and its end; both methods must never raise."""

    def feed(self, chunk: bytes) -> None:
        """Raw (still content-encoded) bytes as the caller reads them."""

    def done(self, error: BaseException | None) -> None:
        """Called once: body fully read and closed, closed early, or failed."""


class _Observer:
    """Passes a response body through unchanged while a sink sees each chunk and the end."""

    def __init__(self, inner: Any, sink: BodySink) -> None:
        self.inner = inner
        self._sink = sink
        self._ended = False

    def feed(self, chunk: bytes) -> None:
        try:
            self._sink.feed(chunk)
        except Exception:  # noqa: BLE001 - never break a request for telemetry
            _log.debug("otel_setup: body observer failed", exc_info=True)

    def end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._sink.done(error)
        except Exception:  # noqa: BLE001
            _log.debug("otel_setup: body observer failed", exc_info=True)


_stream_types: tuple[type, type] | None = None


def _observed_stream_types() -> tuple[type, type]:
    """Subclasses of httpx's stream bases (httpx checks them), built on first use only."""
    global _stream_types
    if _stream_types is not None:
        return _stream_types
    import httpx

    class SyncObserved(httpx.SyncByteStream):
        def __init__(self, observer: _Observer) -> None:
            self._observer = observer

        def __iter__(self) -> Iterator[bytes]:
            observer = self._observer
            try:
                for chunk in observer.inner:
                    observer.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as error:
                observer.end(error)
                raise

        def close(self) -> None:
            try:
                self._observer.inner.close()
            finally:
                self._observer.end(None)

    class AsyncObserved(httpx.AsyncByteStream):
        def __init__(self, observer: _Observer) -> None:
            self._observer = observer

        async def __aiter__(self) -> AsyncIterator[bytes]:
            observer = self._observer
            try:
                async for chunk in observer.inner:
                    observer.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as error:
                observer.end(error)
                raise

        async def aclose(self) -> None:
            try:
                await self._observer.inner.aclose()
            finally:
                self._observer.end(None)

    _stream_types = (SyncObserved, AsyncObserved)
    return _stream_types


def observe_body(response: Any, sink: BodySink) -> None:
    """Let ``sink`` watch the body as the caller reads it; the caller sees no difference.

    A body that is already in memory (a response built by hand) is fed at once.
    """
    import httpx

    sync_type, async_type = _observed_stream_types()
    stream = response.stream
    observer = _Observer(stream, sink)
    if isinstance(stream, httpx.AsyncByteStream):
        response.stream = async_type(observer)
    elif isinstance(stream, httpx.SyncByteStream):
        response.stream = sync_type(observer)
    else:
        observer.end(None)
