"""A service whose failing requests are rare: for the exemplar end-to-end test (tests/assets)."""

from __future__ import annotations

from fastapi import FastAPI

import otel_setup

app = FastAPI(title="keep-e2e")


@app.get("/fine/{n}")
async def fine(n: int) -> dict[str, int]:
    return {"n": n}


@app.get("/fail/{n}")
async def fail(n: int) -> None:
    raise RuntimeError(f"request {n} failed")


otel_setup.configure(app)
