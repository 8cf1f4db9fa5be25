"""A small service used by the subprocess tests (uvicorn, workers, opentelemetry-instrument).

``CALL_CONFIGURE=1`` makes it call ``otel_setup.configure(app)`` itself, to
prove the wrapper plus an explicit call still give one instrumentation.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

app = FastAPI(title="basic-app")


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id, "pid": os.getpid()}


@app.get("/healthcare")
async def healthcare() -> dict[str, str]:
    return {"ok": "yes"}


if os.environ.get("CALL_CONFIGURE") == "1":
    import otel_setup

    telemetry = otel_setup.configure(app)


@app.get("/crash")
async def crash() -> None:
    raise RuntimeError("basic-app crash")
