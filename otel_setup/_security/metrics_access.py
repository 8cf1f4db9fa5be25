"""``/metrics`` for deployments whose app port is public: a bearer token, or a port of its own.

Prometheus text names every route and status of the service, and its labels
are readable by anyone who can reach the endpoint. With
``OTEL_SETUP_METRICS_TOKEN`` set, a scrape must send
``Authorization: Bearer <token>`` (Prometheus: ``authorization.credentials``);
anything else gets 401. The comparison takes the same time whatever the
presented value, so the token cannot be guessed byte by byte.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["authorized", "metrics_endpoint", "start_metrics_server"]

_CHALLENGE: Final = 'Bearer realm="metrics"'


def authorized(header: str | bytes | None, token: str | None) -> bool:
    """True when no token is required, or ``header`` is ``Bearer <token>`` (constant-time)."""
    if token is None:
        return True
    if header is None:
        return False
    raw = header if isinstance(header, bytes) else header.encode("latin-1", "replace")
    scheme, _, presented = raw.strip().partition(b" ")
    ok_scheme = scheme.lower() == b"bearer"
    # compare_digest on the whole value even when the scheme is wrong: no early exit.
    ok_token = hmac.compare_digest(presented.strip(), token.encode("utf-8"))
    return ok_scheme and ok_token


def metrics_endpoint(registry: Any, token: str | None) -> Callable[[Any], Any]:
    """A Starlette endpoint serving ``registry`` as Prometheus text, behind ``token`` when set."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.openmetrics import exposition as openmetrics
    from starlette.responses import Response

    def metrics(request: Any) -> Any:
        # A sync endpoint: Starlette runs it in a thread, so collecting a
        # large registry never stalls the event loop.
        if not authorized(request.headers.get("authorization"), token):
            return Response("unauthorized\n", status_code=401, headers={"WWW-Authenticate": _CHALLENGE})
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            # What Prometheus asks for first: the format that carries exemplars.
            body = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call] # untyped upstream
            return Response(body, headers={"Content-Type": openmetrics.CONTENT_TYPE_LATEST})
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def start_metrics_server(port: int, host: str, registry: Any, token: str | None) -> Any:
    """prometheus_client's own listener, wrapped with the token check; returns the server."""
    if token is None:
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=registry)
        return server
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, make_wsgi_app

    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not authorized(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("WWW-Authenticate", _CHALLENGE), ("Content-Type", "text/plain")])
            return [b"unauthorized\n"]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    class Server(ThreadingWSGIServer):
        """Per-call subclass: the address family is set for this listener only."""

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not worth a log line each."""

    Server.address_family, address = _get_best_family(host, port)  # type: ignore[no-untyped-call] # IPv4/IPv6 as prometheus_client does
    server = make_server(address, port, app, Server, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="otel-setup-metrics", daemon=True).start()
    return server
