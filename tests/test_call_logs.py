"""Slow-query log, table names, and the per-call log events (database, cache, GW2, AI).

Queries run on SQLite in memory, commands on the Redis at 127.0.0.1, API calls against the
loopback stand-ins. The events are read from the JSON lines the package writes to stdout.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, text

import otel_setup
from examples.standins import ai_api, gw2_api
from examples.standins.ai_api import DEMO_API_KEY
from examples.standins.gw2_api import DEMO_KEY
from otel_setup._integrations import cache as cache_module
from otel_setup._integrations import calllog
from otel_setup._integrations.cache import write_ttl
from otel_setup._integrations.sqlalchemy import statement_info, strip_literals
from tests.support.otlp_receiver import OtlpReceiver
from tests.test_errors_and_logs import log_lines
from tests.test_gw2 import serve

SECRET_KEY = "gw2:account:C9B1A2E4-secret-key-material"


def events(out: str, logger: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(out) if line.get("logger") == logger]


@pytest.mark.parametrize(
    ("statement", "stripped"),
    [
        ("SELECT x FROM t WHERE x = :x", "SELECT x FROM t WHERE x = :x"),
        ("SELECT * FROM t WHERE name = 'O''Brien' AND n > 3.5e2", "SELECT * FROM t WHERE name = ? AND n > ?"),
        ("SELECT t1.c2 FROM t1 WHERE id = $1 AND k = %(k)s OR j = %s", None),
        (
            'SELECT "col 1" FROM "My Table" WHERE a IN (1, 2, 0x1F)',
            'SELECT "col 1" FROM "My Table" WHERE a IN (?, ?, ?)',
        ),
        ("SELECT $$it's 5$$, $tag$x$tag$, E'a\\'b', X'ff'", "SELECT ?, ?, ?, ?"),
        ("SELECT ARRAY[1, 2] FROM t", "SELECT ARRAY[?, ?] FROM t"),
        (
            "UPDATE accounts SET balance = -12.5 WHERE id = 7 -- keep",
            "UPDATE accounts SET balance = -? WHERE id = ? -- keep",
        ),
    ],
)
def test_literals_become_placeholders(statement: str, stripped: str | None) -> None:
    assert strip_literals(statement) == (statement if stripped is None else stripped)


@pytest.mark.parametrize(
    ("statement", "operation", "table"),
    [
        ("SELECT a FROM gw2_items WHERE id = ?", "SELECT", "gw2_items"),
        ("insert into gw2_accounts (id) values (?)", "INSERT", "gw2_accounts"),
        ("UPDATE main.accounts SET a = 1", "UPDATE", "main.accounts"),
        ('DELETE FROM "Quoted"', "DELETE", "Quoted"),
        ("SELECT count(*) FROM (SELECT * FROM gw2_items) AS anon_1", "SELECT", "gw2_items"),
        ("SELECT 'rows from users'", "SELECT", None),  # inside a literal: not a table
        ("SELECT 1", "SELECT", None),
    ],
)
def test_table_name_is_parsed_once_per_statement(statement: str, operation: str, table: str | None) -> None:
    info = statement_info(statement)
    assert (info.operation, info.table) == (operation, table)
    assert statement_info(statement) is info, "cached per statement string"


def test_table_names_and_statements_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_setup._integrations import sqlalchemy as module

    monkeypatch.setattr(module, "_tables", {f"t{i}" for i in range(module._MAX_TABLES)})
    monkeypatch.setattr(module, "_statements", {})
    info = statement_info("SELECT * FROM brand_new_table")
    assert (info.table, info.metric_table) == ("brand_new_table", "_OTHER"), "spans keep it, the metric does not"
    assert statement_info("SELECT * FROM t3").metric_table == "t3"
    monkeypatch.setattr(module, "_MAX_STATEMENTS", 2)
    assert statement_info("SELECT 2").operation == "SELECT"
    assert len(module._statements) == 2, "the statement cache stops growing at its cap"


def _sleepy_engine() -> Any:
    engine = create_engine("sqlite://")

    @event.listens_for(engine, "connect")
    def add_sleep(connection: Any, _: Any) -> None:
        connection.create_function("sleep_ms", 1, lambda ms: time.sleep(ms / 1000.0) or ms)

    return engine


def test_slow_query_is_a_warning_without_literals(
    otlp_receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = _sleepy_engine()
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, slow_query_ms=100)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE accounts (name TEXT, pin INTEGER)"))
        connection.execute(text("INSERT INTO accounts VALUES ('Aurora Lightbringer', 4711)"))
        connection.execute(text("SELECT name FROM accounts WHERE pin = 4711 AND sleep_ms(150) > 0"))
    telemetry.force_flush(5.0)
    db_lines = events(capsys.readouterr().out, "otel_setup.db")
    (slow,) = db_lines  # fast queries stay silent at the default call-log level (debug)
    assert slow["event"] == "slow query" and slow["level"] == "warning"
    assert slow["db.query.text"] == "SELECT name FROM accounts WHERE pin = ? AND sleep_ms(?) > ?"
    assert slow["db.system.name"] == "sqlite" and slow["db.operation.name"] == "SELECT"
    assert slow["db.collection.name"] == "accounts"
    assert slow["duration_ms"] >= 150 and "rows" not in slow  # SQLite does not count SELECT rows
    assert otlp_receiver.wait_for(lambda r: any(s.attributes.get("db.collection.name") for s in r.spans()))
    span = next(s for s in otlp_receiver.spans() if "sleep_ms" in str(s.attributes.get("db.query.text")))
    assert slow["trace_id"] == span.trace_id and slow["span_id"] == span.span_id
    assert span.attributes["db.collection.name"] == "accounts"
    durations = [p for p in otlp_receiver.metric_points() if p.name == "db.client.operation.duration"]
    assert {p.attributes.get("db.collection.name") for p in durations} == {"accounts", None}  # None: CREATE TABLE
    assert "4711" not in json.dumps(db_lines) and "Aurora" not in json.dumps(db_lines)


def test_query_events_with_rows_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_engine("sqlite://")
    otel_setup.configure(call_log_level="info", traces_exporter="none")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1), (2)"))
        connection.execute(text("UPDATE t SET x = 3 WHERE x < 10"))
    lines = events(capsys.readouterr().out, "otel_setup.db")
    update = next(line for line in lines if line["db.operation.name"] == "UPDATE")
    assert update["event"] == "query" and update["level"] == "info"
    assert update["db.query.text"] == "UPDATE t SET x = ? WHERE x < ?"
    assert update["rows"] == 2 and update["db.collection.name"] == "t"
    assert isinstance(update["duration_ms"], float)


def test_cache_events_carry_hashed_keys_and_ttl(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    otel_setup.configure(call_log_level="info", traces_exporter="none")
    client.delete(SECRET_KEY)
    client.get(SECRET_KEY)
    client.set(SECRET_KEY, "value", ex=300)
    client.execute_command("SETEX", SECRET_KEY, 60, "value")
    client.get(SECRET_KEY)
    client.delete(SECRET_KEY)
    out = capsys.readouterr().out
    lines = events(out, "otel_setup.cache")
    digest = hashlib.sha256(SECRET_KEY.encode()).hexdigest()[:16]
    assert [
        (line["event"], line["db.operation.name"], line.get("ttl_s"), line.get("cache.result")) for line in lines
    ] == [
        ("cache write", "DEL", None, None),
        ("cache lookup", "GET", None, "miss"),
        ("cache write", "SET", 300.0, None),
        ("cache write", "SETEX", 60.0, None),
        ("cache lookup", "GET", None, "hit"),
        ("cache write", "DEL", None, None),
    ]
    assert all(line["key_hash"] == digest and line["cache.name"] == "gw2" for line in lines)
    assert "C9B1A2E4" not in out, "the raw key never reaches a log line"


def test_write_ttl_shapes() -> None:
    assert write_ttl("SET", ("SET", "k", "v", "PX", b"1500")) == 1.5
    assert write_ttl("SET", ("SET", "k", "v", "NX")) is None
    assert write_ttl("GETEX", ("GETEX", "k", "EX", 30)) == 30.0
    assert write_ttl("PSETEX", ("PSETEX", "k", 250, "v")) == 0.25
    assert write_ttl("EXPIRE", ("EXPIRE", "k", "nonsense")) is None


def test_gw2_and_ai_call_events(otlp_receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str]) -> None:
    with serve(gw2_api.create_app()) as gw2_base, serve(ai_api.create_app()) as ai_base:
        otel_setup.configure(
            otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, gw2_api_base=gw2_base, call_log_level="info"
        )
        with httpx.Client(headers={"Authorization": f"Bearer {DEMO_KEY}"}) as client:
            assert client.get(f"{gw2_base}/v2/characters/Aurora%20Lightbringer").status_code == 200
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Aurora's build?"}]}
        with httpx.Client(headers={"Authorization": f"Bearer {DEMO_API_KEY}"}) as client:
            usage = client.post(f"{ai_base}/v1/chat/completions", json=body).json()["usage"]
    out = capsys.readouterr().out
    (gw2_line,) = events(out, "otel_setup.gw2")
    assert gw2_line["event"] == "gw2 call" and gw2_line["level"] == "info"
    assert gw2_line["url.template"] == "/v2/characters/{name}"
    assert gw2_line["http.response.status_code"] == 200 and gw2_line["duration_ms"] > 0
    (ai_line,) = events(out, "otel_setup.genai")
    assert ai_line["gen_ai.request.model"] == "gpt-4o-mini"
    assert ai_line["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert ai_line["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert ai_line["cost_usd"] == pytest.approx(usage["prompt_tokens"] * 0.15e-6 + usage["completion_tokens"] * 0.6e-6)
    assert ai_line["duration_ms"] > 0 and len(ai_line["trace_id"]) == 32
    logged = json.dumps([gw2_line, ai_line])
    assert "Aurora" not in logged and DEMO_KEY not in logged and DEMO_API_KEY not in logged


def test_disabled_events_build_nothing(
    redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the default level (debug, under the root's info) a call costs the level check only."""
    import redis

    built: list[str] = []

    def spy(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            built.append(name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(cache_module, "key_hash", spy("key_hash", cache_module.key_hash))
    monkeypatch.setattr(calllog, "span_ids", spy("span_ids", calllog.span_ids))
    client = redis.Redis.from_url(redis_url)
    engine = create_engine("sqlite://")
    otel_setup.configure(traces_exporter="none")
    assert not calllog.DB.enabled() and not calllog.CACHE.enabled()
    client.set(SECRET_KEY, "v", ex=5)
    client.get(SECRET_KEY)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert built == []
    assert not [line for line in log_lines(capsys.readouterr().out) if line.get("logger", "").startswith("otel_setup.")]


def test_one_prometheus_family_from_two_scopes_keeps_its_labels_straight() -> None:
    """SQL points carry ``db.collection.name``, Redis points do not: each keeps its own values."""
    import socket

    from prometheus_client.parser import text_string_to_metric_families

    fakeredis = pytest.importorskip("fakeredis")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = create_engine("sqlite://")
    otel_setup.configure(traces_exporter="none", metrics_exporter="prometheus", metrics_port=port)
    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("SELECT x FROM t"))
    client = fakeredis.FakeRedis()
    client.set("gw2:item:1", "v")
    client.get("gw2:item:1")
    exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    (family,) = [
        f for f in text_string_to_metric_families(exposition) if f.name == "db_client_operation_duration_seconds"
    ]
    counts = {
        (s.labels["db_system_name"], s.labels["db_operation_name"], s.labels.get("db_collection_name", ""))
        for s in family.samples
        if s.name.endswith("_count")
    }
    assert counts == {("sqlite", "CREATE", ""), ("sqlite", "SELECT", "t"), ("redis", "SET", ""), ("redis", "GET", "")}
