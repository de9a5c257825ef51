"""`python -m bench ops`: bootstrap, drift detection and replay on the real services.

The orchestrator, the ERP gateway and one store registry run as child processes in a
fresh namespace with fresh databases. The orchestrator's state is written with COPY
(`--records` products with one GTIN each, revision 1), and the event log gets
`--replay-events` resolved events of the first products. So the setup takes seconds,
where the ERP push path would take about 20 minutes for a million records. Then:

1. bootstrap: from the request until the store holds every product (polling its table);
2. drift, nothing differs: `POST /v1/stores/loja-1/drift?wait=true`, `--runs` times;
3. drift, `--differences` scattered rows changed in the store: the same request;
4. replay: the first `--replay-events` products are deleted from the store, then replayed
   from the event log, until the store holds them again; and the same replay once more,
   which changes nothing.

Prints one JSON object on stdout and a summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bench.machine import cpu_model, memory_gib, read_loadavg
from bench.system import ORCHESTRATOR, BenchSystem, asyncpg_dsn
from lojasync.logs import configure_logging
from lojasync.settings import DEFAULT_BROKER_URL, DEFAULT_DATABASE_SERVER

STORE = "loja-1"
USER = "bench"
POLL_SECONDS = 0.2
COPY_CHUNK = 100_000
TIMEOUT_SECONDS = 600.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench ops",
        description="Measure bootstrap, drift detection and replay on the real services.",
    )
    parser.add_argument(
        "--records", type=int, default=1_000_000, help="products in the orchestrator's state"
    )
    parser.add_argument(
        "--replay-events", type=int, default=100_000, help="resolved events replayed"
    )
    parser.add_argument(
        "--differences", type=int, default=100, help="rows changed in the store for the drift run"
    )
    parser.add_argument("--runs", type=int, default=3, help="drift runs; the median is reported")
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path("var/bench"),
        help="service logs go to <log-dir>/<namespace>/",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("LOJASYNC_BROKER_URL", DEFAULT_BROKER_URL),
        help="RabbitMQ URL (default: LOJASYNC_BROKER_URL, else the local server)",
    )
    parser.add_argument(
        "--database-server",
        default=os.environ.get("LOJASYNC_DATABASE_SERVER", DEFAULT_DATABASE_SERVER),
        help="PostgreSQL server URL without a database name",
    )
    parser.add_argument(
        "--json-out", type=Path, default=None, help="also write the JSON to this file"
    )
    return parser


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def product(number: int) -> dict[str, Any]:
    code = f"P{number:07d}"
    return {
        "code": code,
        "description": f"PRODUTO DE TESTE {number}",
        "gtins": [f"789{number:09d}0"],
        "ncm": "22030000",
        "unit": "UN",
        "active": True,
    }


async def load_state(dsn: str, records: int, replay_events: int) -> None:
    """Write `records` products into record_state and `replay_events` into event_log."""
    connection = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    try:
        for start in range(1, records + 1, COPY_CHUNK):
            state_rows = []
            log_rows = []
            for number in range(start, min(start + COPY_CHUNK, records + 1)):
                data = product(number)
                text = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
                digest = hashlib.md5(text, usedforsecurity=False).hexdigest()
                state_rows.append(
                    (
                        "product",
                        data["code"],
                        1,
                        text.decode(),
                        digest,
                        False,
                        "{}",
                        "erp",
                        now,
                    )
                )
                if number <= replay_events:
                    log_rows.append(
                        (
                            f"bench-{number}",
                            "resolved",
                            "product",
                            data["code"],
                            1,
                            "erp",
                            f"bench-change-{number}",
                            False,
                            text.decode(),
                            now,
                        )
                    )
            await connection.copy_records_to_table(
                "record_state",
                records=state_rows,
                columns=[
                    "entity",
                    "record_key",
                    "revision",
                    "data",
                    "content_hash",
                    "deleted",
                    "field_origins",
                    "origin",
                    "updated_at",
                ],
            )
            if log_rows:
                await connection.copy_records_to_table(
                    "event_log",
                    records=log_rows,
                    columns=[
                        "event_id",
                        "kind",
                        "entity",
                        "record_key",
                        "revision",
                        "origin",
                        "causation_id",
                        "deleted",
                        "data",
                        "recorded_at",
                    ],
                )
        await connection.execute("ANALYZE record_state")
        await connection.execute("ANALYZE event_log")
    finally:
        await connection.close()


async def store_count(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM store_record WHERE entity = 'product' AND revision > 0"
            " AND NOT deleted"
        )
    finally:
        await connection.close()
    return count


async def wait_count(dsn: str, expected: int) -> float:
    """Poll the store's table until it has `expected` products; return the time it did."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        if await store_count(dsn) >= expected:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the store did not reach {expected} products in time")
        await asyncio.sleep(POLL_SECONDS)


async def operation(
    client: httpx.AsyncClient, base: str, kind: str, body: dict[str, Any], *, wait: bool
) -> dict[str, Any]:
    response = await client.post(
        f"{base}/v1/stores/{STORE}/{kind}",
        params={"wait": "true" if wait else "false"},
        json={"requested_by": USER, **body},
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def drift_seconds(client: httpx.AsyncClient, base: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    result = await operation(client, base, "drift", {}, wait=True)
    return time.monotonic() - started, result


async def scatter_differences(dsn: str, count: int) -> None:
    """Change the content hash of `count` rows spread evenly over the store's products."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "UPDATE store_record SET content_hash = md5(content_hash) WHERE record_key IN ("
            " SELECT record_key FROM store_record WHERE entity = 'product'"
            " ORDER BY hashtext(record_key) LIMIT $1)",
            count,
        )
    finally:
        await connection.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    system = BenchSystem(args.broker_url, args.database_server, args.log_dir, (STORE,))
    figures: dict[str, Any] = {}
    try:
        say(f"starting the services in namespace {system.namespace}")
        await system.start()
        orchestrator_dsn = asyncpg_dsn(system.database_url(ORCHESTRATOR))
        store_dsn = system.store_dsn(STORE)
        base = system.url(ORCHESTRATOR)

        say(f"writing {args.records:,} products and {args.replay_events:,} events")
        await load_state(orchestrator_dsn, args.records, args.replay_events)

        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
            say("bootstrap")
            started = time.monotonic()
            await operation(client, base, "bootstrap", {}, wait=False)
            ended = await wait_count(store_dsn, args.records)
            figures["bootstrap_seconds"] = round(ended - started, 2)
            figures["bootstrap_records_per_second"] = round(args.records / (ended - started))

            say("drift, nothing differs")
            clean = [await drift_seconds(client, base) for _ in range(args.runs)]
            figures["drift_clean_seconds"] = [round(s, 3) for s, _ in clean]
            figures["drift_clean_median_seconds"] = round(statistics.median(s for s, _ in clean), 3)
            figures["drift_clean_differences"] = clean[-1][1]["result"]["differences"]

            say(f"drift, {args.differences} differences")
            await scatter_differences(store_dsn, args.differences)
            dirty = [await drift_seconds(client, base) for _ in range(args.runs)]
            figures["drift_differences_seconds"] = [round(s, 3) for s, _ in dirty]
            figures["drift_differences_median_seconds"] = round(
                statistics.median(s for s, _ in dirty), 3
            )
            figures["drift_differences_found"] = dirty[-1][1]["result"]["differences"]
            await operation(client, base, "repair", {}, wait=True)

            say(f"replay of {args.replay_events:,} events")
            connection = await asyncpg.connect(store_dsn)
            try:
                await connection.execute(
                    "DELETE FROM store_record WHERE entity = 'product' AND record_key <= $1",
                    f"P{args.replay_events:07d}",
                )
            finally:
                await connection.close()
            started = time.monotonic()
            await operation(client, base, "replay", {"entities": ["product"]}, wait=False)
            ended = await wait_count(store_dsn, args.records)
            figures["replay_seconds"] = round(ended - started, 2)
            figures["replay_events_per_second"] = round(args.replay_events / (ended - started))

            say("the same replay again")
            started = time.monotonic()
            again = await operation(client, base, "replay", {"entities": ["product"]}, wait=True)
            figures["replay_again_publish_seconds"] = round(time.monotonic() - started, 2)
            figures["replay_again_events"] = again["result"]["events"]
    finally:
        await system.close()
    return figures


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("WARNING", "bench")
    load_before = read_loadavg()
    figures = asyncio.run(run(args))
    document = {
        "command": shlex.join(["python", "-m", "bench", "ops", *argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "memory_gib": round(memory_gib(), 1),
            "load_before": load_before,
            "load_after": read_loadavg(),
        },
        "settings": {
            "records": args.records,
            "replay_events": args.replay_events,
            "differences": args.differences,
            "runs": args.runs,
        },
        "figures": figures,
    }
    text = json.dumps(document, indent=2)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print(text, flush=True)
    return 0
