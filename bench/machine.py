"""The machine the benchmark runs on: CPUs, memory, server versions and load."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import asyncpg

from bench.results import MachineInfo

LOAD_POLL_SECONDS = 30.0


def read_loadavg(path: Path = Path("/proc/loadavg")) -> tuple[float, float, float]:
    """Return the 1-, 5- and 15-minute load averages."""
    one_minute, five_minutes, fifteen_minutes = path.read_text().split()[:3]
    return float(one_minute), float(five_minutes), float(fifteen_minutes)


def cpu_model(path: Path = Path("/proc/cpuinfo")) -> str:
    """Return the first `model name` of /proc/cpuinfo, or "unknown" when it has none."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return "unknown"


def memory_gib(path: Path = Path("/proc/meminfo")) -> float:
    """Return MemTotal in GiB."""
    for line in path.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1024 * 1024)
    return 0.0


async def wait_for_load(
    limit: float,
    max_wait: float,
    on_wait: Callable[[float, float], None],
    *,
    poll_seconds: float = LOAD_POLL_SECONDS,
) -> float:
    """Wait until the 1-minute load is at most `limit`, polling every `poll_seconds`.

    Gives up after `max_wait` seconds; returns the seconds waited. `on_wait` receives the
    load and the seconds left before each wait.
    """
    started = time.monotonic()
    while True:
        load = read_loadavg()[0]
        waited = time.monotonic() - started
        if load <= limit or waited >= max_wait:
            return waited
        on_wait(load, max_wait - waited)
        await asyncio.sleep(min(poll_seconds, max_wait - waited))


async def rabbitmq_version(broker_url: str) -> str:
    """Return the broker's product and version, as it reports them when a client connects."""
    connection = await aio_pika.connect(broker_url)
    try:
        transport = connection.transport
        if transport is None:
            return "unknown"
        properties = transport.connection.server_properties
        product = properties.get("product", "RabbitMQ")
        version = properties.get("version", "unknown")
        return f"{product!s} {version!s}"
    finally:
        await connection.close()


async def postgresql_version(dsn: str) -> str:
    """Return `SELECT version()` of the server."""
    connection = await asyncpg.connect(dsn)
    try:
        version: str = await connection.fetchval("SELECT version()")
        return version
    finally:
        await connection.close()


async def describe_machine(broker_url: str, admin_dsn: str, load_wait: float) -> MachineInfo:
    return MachineInfo(
        cpus=os.cpu_count() or 0,
        memory_gib=memory_gib(),
        cpu_model=cpu_model(),
        rabbitmq_version=await rabbitmq_version(broker_url),
        postgresql_version=await postgresql_version(admin_dsn),
        load_start=read_loadavg(),
        load_wait_seconds=load_wait,
    )
