"""The order of the benchmark's phases, from starting the services to dropping them.

1. Start the services; push the reference tables and parent records (not measured).
2. Per run: lojasync throughput on a fresh slice, then the direct-write and broker
   floors on the same records, so the three see the same machine conditions.
3. With --profile: one more throughput run with py-spy attached (not in the medians).
4. Per run: latency at the offered load.
5. Peak memory (VmHWM) of every service; convergence of every store.
6. With --backlog N: the backlog memory check.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import aiormq
import asyncpg
import httpx

from bench.backlog import run_backlog
from bench.floors import (
    prepare_broker_floor,
    prepare_direct_floor,
    run_broker_floor,
    run_direct_floor,
)
from bench.latency import run_latency
from bench.machine import (
    describe_machine,
    postgresql_version,
    rabbitmq_version,
    read_loadavg,
    wait_for_load,
)
from bench.memory import read_status_kib
from bench.messages import Progress
from bench.polling import wait_until
from bench.profiling import record, summarize_raw
from bench.results import BenchResult, BenchSettings, ServiceMemory, ServiceProfile
from bench.system import GATEWAY, ORCHESTRATOR, BenchSystem, store_service_name
from bench.throughput import push_all, run_throughput, wait_seconds
from bench.workload import Workload, latency_changes
from lojasync.convergence import ConvergenceReport, compare_stores
from lojasync.settings import redact_url

logger = logging.getLogger(__name__)

LOAD_MAX_WAIT_SECONDS = 600.0
SETUP_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class BenchOptions:
    settings: BenchSettings
    broker_url: str
    database_server: str
    log_root: Path
    command: str
    max_load: float | None
    """Wait (up to LOAD_MAX_WAIT_SECONDS) until the 1-minute load is at most this."""


class BenchFailed(Exception):
    """A phase failed; `partial` contains what the earlier phases measured.

    A failure before the first phase names its message in `bench.messages` (`message`
    and `values`), so that it is printed in the output language. `reason` is English.
    """

    def __init__(
        self,
        reason: str,
        partial: BenchResult | None,
        *,
        message: str = "error.failed",
        values: dict[str, object] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial
        self.message = message
        self.values = values if values is not None else {"error": reason}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def run_benchmark(options: BenchOptions, progress: Progress) -> BenchResult:
    """Run every phase and return the results; raises BenchFailed when a phase fails."""
    settings = options.settings
    load_wait = 0.0
    if options.max_load is not None:
        limit = options.max_load
        load_wait = await wait_for_load(
            limit,
            LOAD_MAX_WAIT_SECONDS,
            lambda load, left: progress.say(
                "progress.load_wait", load=load, limit=limit, seconds=left
            ),
        )
        load = read_loadavg()[0]
        if load > limit:
            progress.say("progress.load_high", load=load)

    system = BenchSystem(
        broker_url=options.broker_url,
        database_server=options.database_server,
        log_root=options.log_root,
        store_ids=settings.stores,
    )
    broker = redact_url(options.broker_url)
    try:
        await rabbitmq_version(options.broker_url)
    except (OSError, aiormq.exceptions.AMQPError) as exc:
        raise BenchFailed(
            f"cannot reach RabbitMQ at {broker}: {exc}; start it or pass --broker-url",
            None,
            message="error.broker_unreachable",
            values={"url": broker, "error": exc},
        ) from exc
    try:
        await postgresql_version(system.admin_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        database = redact_url(options.database_server)
        raise BenchFailed(
            f"cannot reach PostgreSQL at {database}: {exc}; start it or pass --database-server",
            None,
            message="error.database_unreachable",
            values={"url": database, "error": exc},
        ) from exc
    machine = await describe_machine(options.broker_url, system.admin_dsn, load_wait)
    result = BenchResult(
        started_at=_now(), command=options.command, settings=settings, machine=machine
    )
    try:
        await _run_phases(system, result, progress)
    except Exception as exc:
        logger.exception("benchmark phase failed")
        result.error = f"{type(exc).__name__}: {exc}"
        raise BenchFailed(result.error, result) from exc
    finally:
        progress.say("progress.cleanup")
        await system.close()
        result.machine = replace(result.machine, load_end=read_loadavg())
        result.finished_at = _now()
    return result


async def _run_phases(system: BenchSystem, result: BenchResult, progress: Progress) -> None:
    settings = result.settings
    slices = settings.runs + (1 if settings.profile_seconds else 0)
    workload = Workload(
        products_per_run=settings.products_per_run, slices=slices, store_ids=settings.stores
    )

    progress.say("progress.starting", namespace=system.namespace, log_dir=system.log_dir)
    await system.start()
    await _push_setup(system, workload, progress, settings.batch_size)
    await prepare_direct_floor(system)
    await prepare_broker_floor(system)

    for index in range(settings.runs):
        changes = len(workload.run_records(index))
        progress.say("progress.throughput", run=index + 1, runs=settings.runs, changes=changes)
        run = await run_throughput(system, workload, index, batch_size=settings.batch_size)
        result.throughput.append(run)
        progress.say("progress.throughput_done", seconds=run.seconds, rate=run.changes_per_second)

        direct = await run_direct_floor(system, workload, index, batch_size=settings.batch_size)
        result.direct_floor.append(direct)
        progress.say("progress.direct", rate=direct.changes_per_second)

        broker = await run_broker_floor(system, workload, index)
        result.broker_floor.append(broker)
        progress.say("progress.broker", rate=broker.changes_per_second)

    if settings.profile_seconds:
        result.profiles = await _profile_run(system, workload, settings.runs, settings, progress)

    pool = workload.latency_pool(slices)
    count = round(settings.latency_rate * settings.latency_seconds)
    for generation in range(1, settings.runs + 1):
        progress.say(
            "progress.latency",
            run=generation,
            runs=settings.runs,
            rate=settings.latency_rate,
            seconds=settings.latency_seconds,
        )
        latency = await run_latency(
            system,
            latency_changes(pool, generation, count),
            offered_rate=settings.latency_rate,
            push_size=settings.latency_push_size,
        )
        result.latency.append(latency)
        progress.say(
            "progress.latency_done",
            p50=latency.latency.p50_ms,
            p99=latency.latency.p99_ms,
            max=latency.latency.max_ms,
        )

    result.memory = _service_memory(system)
    result.converged = (await compare_stores(system.url(ORCHESTRATOR))).converged

    if settings.backlog > 0:
        progress.say("progress.backlog", events=settings.backlog)
        result.backlog = await run_backlog(system, workload, settings.backlog)
        progress.say(
            "progress.backlog_done",
            rate=result.backlog.drain_rate,
            peak=result.backlog.peak_rss_mb,
        )


async def _push_setup(
    system: BenchSystem, workload: Workload, progress: Progress, batch_size: int
) -> None:
    """Push the set-up records and wait until every store matches the orchestrator."""
    records = workload.setup_records()
    expected = workload.setup_counts()
    progress.say("progress.setup", records=len(records))
    started = asyncio.get_running_loop().time()
    orchestrator_url = system.url(ORCHESTRATOR)

    async with httpx.AsyncClient(timeout=300.0) as client:
        await push_all(client, system.url(GATEWAY), records, batch_size)

        async def probe() -> ConvergenceReport:
            return await compare_stores(orchestrator_url, client=client)

        def settled(report: ConvergenceReport) -> bool:
            decided = {entity: summary["count"] for entity, summary in report.orchestrator.items()}
            enough = all(decided.get(entity, 0) >= count for entity, count in expected.items())
            return enough and len(report.stores) == len(system.store_ids) and report.converged

        await wait_until(
            probe,
            settled,
            timeout=wait_seconds(len(records)),
            interval=SETUP_POLL_SECONDS,
            description="every store matching the orchestrator after the set-up push",
        )
    progress.say("progress.setup_done", seconds=asyncio.get_running_loop().time() - started)


async def _profile_run(
    system: BenchSystem,
    workload: Workload,
    index: int,
    settings: BenchSettings,
    progress: Progress,
) -> list[ServiceProfile]:
    """Run one more throughput run with py-spy recording the orchestrator and a store."""
    assert settings.profile_seconds is not None
    targets = [ORCHESTRATOR, store_service_name(settings.stores[0])]
    progress.say(
        "progress.profile",
        changes=len(workload.run_records(index)),
        targets=", ".join(targets),
        seconds=settings.profile_seconds,
    )
    paths = {name: system.log_dir / f"py-spy-{name.replace(' ', '-')}.txt" for name in targets}
    recordings = [
        asyncio.create_task(record(system.pid(name), settings.profile_seconds, paths[name]))
        for name in targets
    ]
    await run_throughput(system, workload, index, batch_size=settings.batch_size)
    await asyncio.gather(*recordings)
    return [summarize_raw(name, str(path), path.read_text()) for name, path in paths.items()]


def _service_memory(system: BenchSystem) -> list[ServiceMemory]:
    names = [ORCHESTRATOR, GATEWAY, *(store_service_name(s) for s in system.store_ids)]
    memory = []
    for name in names:
        pid = system.pid(name)
        memory.append(ServiceMemory(name, pid, read_status_kib(pid, "VmHWM")))
    return memory
