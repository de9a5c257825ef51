"""The services under test: started as child processes, in a namespace of their own.

Each invocation picks a fresh namespace (`bench-<8 hex digits>`), so its exchanges and
queues are new, and fresh databases (`lojasync_bench_<hex>_<service>`). `close` stops the
processes, drops the databases and deletes the exchanges and queues.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import httpx
from aio_pika.abc import AbstractChannel, AbstractConnection
from sqlalchemy.engine import make_url

from lojasync.batch import batch_queue
from lojasync.messaging import Broker
from lojasync.persistence import drop_database, ensure_database
from lojasync.settings import database_url_for
from lojasync.topology import orchestrator_partition, store_queue
from lojasync_demo.processes import ProcessGroup, ServiceProcess

logger = logging.getLogger(__name__)

ORCHESTRATOR = "sync-orchestrator"
GATEWAY = "erp-gateway"
STORE_PREFIX = "store-registry "
STARTUP_SECONDS = 120.0
POLL_SECONDS = 0.5
# The orchestrator's default number of input partitions (LOJASYNC_PARTITIONS).
PARTITIONS = 4
# Clean-up retries span a restart of PostgreSQL or RabbitMQ, which takes a few seconds.
CLEANUP_ATTEMPTS = 6
CLEANUP_RETRY_SECONDS = 5.0


# Ports this process has handed out. Linux may give the same port to two binds to port 0
# in a row once the first socket is closed. Two services of one system then got the same
# port, and the second failed to start.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that was free a moment ago and that this process has
    not returned before.

    NOTE: another process may bind the port before the service does; the service then
    exits and `ProcessGroup.wait_ready` reports it with its log file.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def asyncpg_dsn(url: str) -> str:
    """Turn a SQLAlchemy URL (postgresql+asyncpg://...) into a DSN that asyncpg accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def store_service_name(store_id: str) -> str:
    return f"{STORE_PREFIX}{store_id}"


@dataclass
class BenchSystem:
    """One invocation's services, databases and broker names."""

    broker_url: str
    database_server: str
    log_root: Path
    """Parent of the log directory; each invocation logs to `<log_root>/<namespace>/`."""
    store_ids: tuple[str, ...]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    group: ProcessGroup = field(default_factory=ProcessGroup)
    database_urls: dict[str, str] = field(default_factory=dict)
    extra_queues: set[str] = field(default_factory=set)
    extra_exchanges: set[str] = field(default_factory=set)

    @property
    def namespace(self) -> str:
        return f"bench-{self.run_id}"

    @property
    def log_dir(self) -> Path:
        return self.log_root / self.namespace

    def database_url(self, name: str) -> str:
        """Return the database URL of service `name`, creating the name on first use."""
        if name not in self.database_urls:
            suffix = name.removeprefix(STORE_PREFIX).replace("-", "_")
            self.database_urls[name] = database_url_for(
                f"lojasync_bench_{self.run_id}_{suffix}", self.database_server
            )
        return self.database_urls[name]

    def store_dsn(self, store_id: str) -> str:
        return asyncpg_dsn(self.database_url(store_service_name(store_id)))

    @property
    def admin_dsn(self) -> str:
        return asyncpg_dsn(database_url_for("postgres", self.database_server))

    def url(self, name: str) -> str:
        return self.group.get(name).url

    def store_url(self, store_id: str) -> str:
        return self.url(store_service_name(store_id))

    def pid(self, name: str) -> int:
        process = self.group.get(name).process
        if process is None or process.returncode is not None:
            raise RuntimeError(f"{name} is not running; see {self.group.get(name).log_path}")
        return process.pid

    def store_process(self, store_id: str, *, log_name: str | None = None) -> ServiceProcess:
        """Describe the store registry of `store_id` on a new free port."""
        name = store_service_name(store_id)
        port = free_port()
        return ServiceProcess(
            name,
            "store_registry",
            port,
            {
                **self._common_env(),
                "LOJASYNC_STORE_ID": store_id,
                "LOJASYNC_DATABASE_URL": self.database_url(name),
                "LOJASYNC_API_URL": f"http://127.0.0.1:{port}",
            },
            self.log_dir / f"{log_name or f'store-registry-{store_id}'}.log",
        )

    def _common_env(self) -> dict[str, str]:
        return {"LOJASYNC_BROKER_URL": self.broker_url, "LOJASYNC_NAMESPACE": self.namespace}

    def _services(self) -> list[ServiceProcess]:
        services = [
            ServiceProcess(
                ORCHESTRATOR,
                "sync_orchestrator",
                free_port(),
                {**self._common_env(), "LOJASYNC_DATABASE_URL": self.database_url(ORCHESTRATOR)},
                self.log_dir / "sync-orchestrator.log",
            ),
            ServiceProcess(
                GATEWAY,
                "erp_gateway",
                free_port(),
                {**self._common_env(), "LOJASYNC_DATABASE_URL": self.database_url(GATEWAY)},
                self.log_dir / "erp-gateway.log",
            ),
        ]
        services.extend(self.store_process(store_id) for store_id in self.store_ids)
        return services

    async def start(self) -> None:
        """Create the databases, start every service and wait until the orchestrator
        lists every store. Raises RuntimeError or TimeoutError naming the service."""
        services = self._services()
        for service in services:
            await ensure_database(self.database_url(service.name))
        for service in services:
            await self.group.start(service)
        await self.group.wait_ready(STARTUP_SECONDS)
        await self._wait_stores_announced()

    async def _wait_stores_announced(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        url = f"{self.url(ORCHESTRATOR)}/v1/stores"
        async with httpx.AsyncClient(timeout=10.0) as client:
            while True:
                response = await client.get(url)
                known = {item["store_id"] for item in response.json().get("items", [])}
                if known >= set(self.store_ids):
                    return
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(set(self.store_ids) - known))
                    raise TimeoutError(
                        f"the orchestrator did not learn of {missing} within "
                        f"{STARTUP_SECONDS:.0f} s; see {self.log_dir}"
                    )
                await asyncio.sleep(POLL_SECONDS)

    def queue_names(self) -> list[str]:
        """Return every queue the services declare in this namespace, and the bench's own."""
        names = [
            f"{self.namespace}.dead-letters",
            f"{self.namespace}.erp-gateway",
            *(f"{self.namespace}.{orchestrator_partition(i)}" for i in range(PARTITIONS)),
            *(
                f"{self.namespace}.{consumer}"
                for name in self.database_urls
                if name.startswith(STORE_PREFIX)
                for consumer in (
                    store_queue(name.removeprefix(STORE_PREFIX)).consumer,
                    batch_queue(name.removeprefix(STORE_PREFIX)).consumer,
                )
            ),
        ]
        return [*names, *sorted(self.extra_queues)]

    def exchange_names(self) -> list[str]:
        """Return every exchange the services declare in this namespace, and the bench's own."""
        names = Broker(self.broker_url, self.namespace, partitions=PARTITIONS)
        base = [
            names.exchange_name,
            names.dead_letter_exchange_name,
            names.partitions_exchange_name,
            names.unpartitioned_exchange_name(PARTITIONS),
        ]
        return [*base, *sorted(self.extra_exchanges)]

    async def close(self) -> None:
        """Stop the services, then drop the databases and delete the queues and exchanges.

        Each step runs even when an earlier one failed; failures are logged.
        """
        await self.group.stop()
        for url in self.database_urls.values():
            await _retry(
                functools.partial(drop_database, url),
                (OSError, asyncpg.PostgresError, asyncpg.InterfaceError),
                f"dropping database {make_url(url).database}",
            )
        await _retry(
            self._delete_broker_objects,
            (OSError, aiormq.exceptions.AMQPError),
            f"deleting the queues and exchanges of namespace {self.namespace}",
        )

    async def _delete_broker_objects(self) -> None:
        connection = await aio_pika.connect(self.broker_url)
        async with connection:
            channel = await connection.channel()
            for queue in self.queue_names():
                channel = await _delete(channel, connection, "queue", queue)
            for exchange in self.exchange_names():
                channel = await _delete(channel, connection, "exchange", exchange)


async def _retry(
    action: Callable[[], Awaitable[None]],
    errors: tuple[type[BaseException], ...],
    description: str,
) -> None:
    """Run a clean-up step, retrying while a server restarts; log when it keeps failing."""
    for attempt in range(1, CLEANUP_ATTEMPTS + 1):
        try:
            await action()
            return
        except errors as exc:
            if attempt == CLEANUP_ATTEMPTS:
                logger.error("%s failed %d times, giving up: %s", description, attempt, exc)
                return
            logger.warning("%s failed, retrying: %s", description, exc)
            await asyncio.sleep(CLEANUP_RETRY_SECONDS)


async def _delete(
    channel: AbstractChannel, connection: AbstractConnection, kind: str, name: str
) -> AbstractChannel:
    """Delete a queue or exchange; return a usable channel, since an error closes it."""
    try:
        if kind == "queue":
            await channel.queue_delete(name)
        else:
            await channel.exchange_delete(name)
        return channel
    except aiormq.exceptions.ChannelClosed as exc:
        logger.warning("deleting %s %s failed: %s", kind, name, exc)
        return await connection.channel()
