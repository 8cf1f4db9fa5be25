"""Redis: contrib's spans, plus the operation-duration metric contrib lacks.

Contrib's instrumentor patches the client classes, so clients created before
``configure()`` are covered too, and it records commands as ``GET ?`` (never
the arguments). Its hooks are not called for failed commands, so the metric
comes from a thin wrapper placed around contrib's, which sees errors as well.
The same wrapper sees read replies, from which cache hits and misses are
counted (see :mod:`otel_setup._integrations.cache`). Inside an unsampled
request it calls past contrib's wrapper: contrib's span would not be recorded,
and building it costs more than the command's own client-side work. There it
buffers the command instead (see :mod:`otel_setup._hotpath.keep`): should the request
fail or be slow, the command is exported as an ``otel_setup.redis`` span with
the stable attributes, under the request's SERVER span.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any, Final

from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import SpanKind, TracerProvider

from otel_setup._core.catalog import buckets
from otel_setup._hotpath.keep import BufferingRoot, Built, buffer
from otel_setup._hotpath.metrics import histogram as fast_histogram
from otel_setup._hotpath.metrics import values_recorder
from otel_setup._hotpath.sampling import unsampled_children_dropped, unsampled_current_span
from otel_setup._integrations._semconv import DB_OPERATION_ATTRIBUTES
from otel_setup._integrations.cache import CacheCounter
from otel_setup.version import __version__

__all__ = ["instrument_redis", "uninstrument_redis"]

_log = logging.getLogger("otel_setup")
_SCOPE_NAME: Final = "otel_setup.redis"

_DURATION_ATTRIBUTES: Final = DB_OPERATION_ATTRIBUTES  # db.collection.name stays None
_PLANS_ATTR: Final = "_otel_setup_commands"
_MAX_COMMANDS: Final = 512

_wrapped: list[tuple[Any, str]] = []


def _client_attributes(instance: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"db.system.name": "redis"}
    try:
        kwargs = instance.connection_pool.connection_kwargs
    except AttributeError:
        return attributes
    host = kwargs.get("host")
    if host:
        attributes["server.address"] = host
        port = kwargs.get("port")
        if port:
            attributes["server.port"] = int(port)
    attributes["db.namespace"] = str(kwargs.get("db", 0))
    return attributes


_Commands = dict[Any, tuple[str | None, tuple[Any, ...]]]


def _commands(instance: Any) -> _Commands:
    """Per connection pool: command name -> (operation, metric values), filled as commands are first seen."""
    pool = getattr(instance, "connection_pool", None)
    commands: _Commands | None = getattr(pool, _PLANS_ATTR, None)
    if commands is None:
        commands = {None: (None, tuple(map(_client_attributes(instance).get, _DURATION_ATTRIBUTES)))}
        with contextlib.suppress(AttributeError):  # no pool, or a pool with slots: recompute next time
            setattr(pool, _PLANS_ATTR, commands)
    return commands


def _command(commands: _Commands, name: Any) -> tuple[str | None, tuple[Any, ...]]:
    operation = name if name == "PIPELINE" else (name.decode() if isinstance(name, bytes) else str(name)).upper()
    values = (*commands[None][1][:4], operation, None, None)
    if len(commands) < _MAX_COMMANDS:
        commands[name] = (operation, values)
    return operation, values


def _command_span(instance: Any, operation: str | None, error: BaseException | None) -> Built:
    """A Redis command of an unsampled request that is kept: the stable attributes, named as contrib names it."""
    attributes = _client_attributes(instance)
    name = operation or "redis"
    if operation:
        attributes["db.operation.name"] = operation
    error_type = None
    if error is not None:
        error_type = attributes["error.type"] = type(error).__qualname__
    return _SCOPE_NAME, name, SpanKind.CLIENT, attributes, error_type, error if isinstance(error, Exception) else None


def _command_wrapper(
    duration: Histogram, pipeline: bool, is_async: bool, cache: CacheCounter | None = None, bypass: bool = False
) -> Callable[..., Any]:
    """``bypass``: contrib's wrapper sits right below this one and may be skipped when unsampled."""
    record = values_recorder(duration, _DURATION_ATTRIBUTES)

    def measure(
        instance: Any,
        args: tuple[Any, ...],
        start: float,
        error: BaseException | None,
        result: Any = None,
        root: Any = None,
    ) -> None:
        try:
            ended = perf_counter()
            elapsed = ended - start
            commands = _commands(instance)
            name = "PIPELINE" if pipeline else (args[0] if args else None)
            entry = commands.get(name)
            if entry is None:
                entry = _command(commands, name)
            operation, values = entry
            if error is not None:
                values = (*values[:-1], type(error).__qualname__)
            record(elapsed, values)
            if root is not None and root.__class__ is BufferingRoot:  # contrib's span was skipped: buffered instead
                buffer(root, (start, ended, 0, _command_span, (instance, operation, error)))
            # --- cache hit/miss and the cache log (see cache.py): successful single commands only
            if cache is not None and error is None and not pipeline and operation is not None:
                cache.observe(operation, args, result, elapsed)
        except Exception:  # noqa: BLE001 - never break a command for telemetry
            _log.debug("otel_setup: redis metric failed", exc_info=True)

    if is_async:

        async def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            root = unsampled_current_span() if bypass else None
            if root is not None:
                wrapped = wrapped.__wrapped__
            start = perf_counter()
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                measure(instance, args, start, exc, None, root)
                raise
            measure(instance, args, start, None, result, root)
            return result

        return async_wrapper

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        root = unsampled_current_span() if bypass else None
        if root is not None:
            wrapped = wrapped.__wrapped__
        start = perf_counter()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            measure(instance, args, start, exc, None, root)
            raise
        measure(instance, args, start, None, result, root)
        return result

    return wrapper


def instrument_redis(
    *, tracer_provider: TracerProvider, meter_provider: MeterProvider, cache_key_prefixes: Sequence[str] = ()
) -> bool:
    """Returns False when redis-py or contrib's instrumentation is missing, or already done."""
    if _wrapped:
        return False
    try:
        import redis
        import redis.asyncio
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from wrapt import wrap_function_wrapper
    except ImportError:
        _log.info("otel_setup: redis instrumentation skipped (redis or opentelemetry-instrumentation-redis missing)")
        return False
    instrumentor = RedisInstrumentor()
    bypass = False
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider, raise_exception_on_conflict=True)
        bypass = unsampled_children_dropped(tracer_provider)
    duration = fast_histogram(
        meter_provider,
        (_SCOPE_NAME, __version__),
        "db.client.operation.duration",
        "s",
        "Duration of database client operations.",
        buckets("db.client.operation.duration"),
        _DURATION_ATTRIBUTES,
    )
    targets = (
        (redis.client, "Redis.execute_command", False, False),
        (redis.client, "Pipeline.execute", True, False),
        (redis.asyncio.client, "Redis.execute_command", False, True),
        (redis.asyncio.client, "Pipeline.execute", True, True),
    )
    cache = CacheCounter(meter_provider, cache_key_prefixes)
    for module, name, pipeline, is_async in targets:
        wrap_function_wrapper(module, name, _command_wrapper(duration, pipeline, is_async, cache, bypass))
        _wrapped.append((module, name))
    return True


def uninstrument_redis() -> None:
    if not _wrapped:
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.utils import unwrap

    for module, name in reversed(_wrapped):
        owner_name, _, attribute = name.partition(".")
        unwrap(getattr(module, owner_name), attribute)
    _wrapped.clear()
    RedisInstrumentor().uninstrument()
