"""Run the lojasync services as real processes and inject faults into them.

`start_system` starts the sync orchestrator, the ERP gateway with the ERP stand-in
behind it, and three store registries as child processes (`python -m <service>`) on
free ports of 127.0.0.1, in one namespace and with a fresh database per service. The
faults act on real components: a signal to a process, `rabbitmqctl stop_app` and
`start_app` on the local RabbitMQ node, refused connections to one PostgreSQL database,
and a restart of the whole PostgreSQL cluster with `pg_ctlcluster`.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench.system import free_port
from lojasync_demo.processes import ProcessGroup, ServiceProcess

ORCHESTRATOR = "sync-orchestrator"
GATEWAY = "erp-gateway"
ERP = "erp-standin"
STORES = ("loja-1", "loja-2", "loja-3")

# Wait between two polls of a condition, in seconds.
POLL_SECONDS = 0.25
LOG_TAIL_LINES = 40

DatabaseFactory = Callable[[str], Awaitable[str]]


@dataclass
class FaultSystem:
    """The services of one test, running as child processes."""

    namespace: str
    broker_url: str
    log_dir: Path
    database_urls: dict[str, str]
    """The database URL of each service, by service name."""
    group: ProcessGroup = field(default_factory=ProcessGroup)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    """What the faults did, with the seconds since the system started."""
    started_at: float = field(default_factory=time.monotonic)

    def note(self, event: str) -> None:
        """Add an event to the timeline."""
        self.timeline.append((time.monotonic() - self.started_at, event))

    def describe_timeline(self) -> str:
        return ", ".join(f"{event} at {seconds:.1f} s" for seconds, event in self.timeline)

    def url(self, name: str) -> str:
        return self.group.get(name).url

    @property
    def orchestrator_url(self) -> str:
        return self.url(ORCHESTRATOR)

    @property
    def gateway_url(self) -> str:
        return self.url(GATEWAY)

    @property
    def erp_url(self) -> str:
        return self.url(ERP)

    def database_name(self, name: str) -> str:
        database = make_url(self.database_urls[name]).database
        assert database is not None
        return database

    async def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send `sig` to a service, wait until its process exits and return the status."""
        status = await self.group.kill(name, sig)
        self.note(f"{name} killed with {sig.name}")
        return status

    async def restart(self, name: str, timeout: float = 90.0) -> None:
        """Start an exited service again and wait until its `/ready` returns 200."""
        await self.group.restart(name)
        await self.group.wait_ready(timeout, names=[name])
        self.note(f"{name} ready again")

    async def stop(self) -> None:
        await self.group.stop()

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last `lines` lines of every service's log, one section per service."""
        sections = []
        for service in self.group.services:
            try:
                text = service.log_path.read_text(errors="replace")
            except OSError as exc:
                text = f"(cannot read the log: {exc})"
            tail = "\n".join(text.splitlines()[-lines:])
            sections.append(f"===== {service.name} ({service.log_path}) =====\n{tail}")
        return "\n".join(sections)


async def start_system(
    *,
    broker_url: str,
    namespace: str,
    fresh_database: DatabaseFactory,
    log_dir: Path,
    startup_timeout: float = 120.0,
) -> FaultSystem:
    """Start every service, then wait until each is ready and the orchestrator lists every store.

    Raises RuntimeError naming the service that did not start, with the tails of the logs.
    """
    names = [ORCHESTRATOR, GATEWAY, ERP, *STORES]
    database_urls = {name: await fresh_database(name) for name in names}
    system = FaultSystem(namespace, broker_url, log_dir, database_urls)
    try:
        for service in _services(system):
            await system.group.start(service)
        await system.group.wait_ready(startup_timeout)
        async with httpx.AsyncClient(timeout=10.0) as client:
            await _wait_stores_known(client, system.orchestrator_url, startup_timeout)
    except (TimeoutError, RuntimeError, OSError, httpx.HTTPError) as exc:
        tails = system.log_tails()
        await system.stop()
        raise RuntimeError(f"the services did not start: {exc}\n{tails}") from exc
    return system


def _services(system: FaultSystem) -> list[ServiceProcess]:
    common = {
        "LOJASYNC_BROKER_URL": system.broker_url,
        "LOJASYNC_NAMESPACE": system.namespace,
        "LOJASYNC_OUTBOX_POLL_SECONDS": "0.1",
        "LOJASYNC_LOG_LEVEL": "INFO",
    }
    erp_port = free_port()
    services = [
        ServiceProcess(
            ORCHESTRATOR,
            "sync_orchestrator",
            free_port(),
            {**common, "LOJASYNC_DATABASE_URL": system.database_urls[ORCHESTRATOR]},
            system.log_dir / f"{ORCHESTRATOR}.log",
        ),
        ServiceProcess(
            ERP,
            "lojasync_demo.erp_standin",
            erp_port,
            {
                "LOJASYNC_ERP_DATABASE_URL": system.database_urls[ERP],
                "LOJASYNC_ERP_HTTP_HOST": "127.0.0.1",
                "LOJASYNC_ERP_HTTP_PORT": str(erp_port),
                "LOJASYNC_ERP_FAIL_FIRST": "0",
            },
            system.log_dir / f"{ERP}.log",
        ),
        ServiceProcess(
            GATEWAY,
            "erp_gateway",
            free_port(),
            {
                **common,
                "LOJASYNC_DATABASE_URL": system.database_urls[GATEWAY],
                "LOJASYNC_ERP_CALLBACK_URL": f"http://127.0.0.1:{erp_port}/erp/changes",
                "LOJASYNC_DELIVERY_POLL_SECONDS": "0.2",
            },
            system.log_dir / f"{GATEWAY}.log",
        ),
    ]
    for store_id in STORES:
        port = free_port()
        services.append(
            ServiceProcess(
                store_id,
                "store_registry",
                port,
                {
                    **common,
                    "LOJASYNC_STORE_ID": store_id,
                    "LOJASYNC_DATABASE_URL": system.database_urls[store_id],
                    "LOJASYNC_API_URL": f"http://127.0.0.1:{port}",
                },
                system.log_dir / f"store-registry-{store_id}.log",
            )
        )
    return services


async def _wait_stores_known(
    client: httpx.AsyncClient, orchestrator_url: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    known: list[str] = []
    while time.monotonic() < deadline:
        response = await client.get(f"{orchestrator_url}/v1/stores")
        if response.status_code == 200:
            known = sorted(item["store_id"] for item in response.json()["items"])
            if known == sorted(STORES):
                return
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(
        f"the orchestrator lists stores {known} after {timeout:.0f} s; expected {list(STORES)}"
    )


# --- RabbitMQ ---------------------------------------------------------------------------


async def run_command(*arguments: str, timeout: float = 180.0) -> str:
    """Run a command of this machine and return its output; raise RuntimeError on failure."""
    program = shutil.which(arguments[0])
    if program is None:
        raise RuntimeError(f"{arguments[0]} is not installed on this machine (not on PATH)")
    process = await asyncio.create_subprocess_exec(
        program,
        *arguments[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{' '.join(arguments)} did not finish within {timeout:.0f} s") from None
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed with status {process.returncode}: {text}")
    return text


@asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """Stop the local RabbitMQ application and start it again when the block ends.

    `rabbitmqctl stop_app` keeps the Erlang node running and stops RabbitMQ inside it, so
    every client connection drops; durable queues and persistent messages survive.
    `start_app` runs even when the block raises, and `await_startup` waits until the
    node accepts connections again.
    """
    await run_command("rabbitmqctl", "stop_app")
    try:
        yield
    finally:
        await run_command("rabbitmqctl", "start_app")
        await run_command("rabbitmqctl", "await_startup")


async def dead_letter_reasons(
    broker_url: str, namespace: str, limit: int = 5
) -> tuple[int, list[str]]:
    """Return the number of messages in `<namespace>.dead-letters` and up to `limit` reasons.

    The reasons come from the `x-lojasync-reason` header; the messages read stay in the
    queue because they are rejected with requeue.
    """
    import aio_pika

    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{namespace}.dead-letters", passive=True)
        count = queue.declaration_result.message_count or 0
        reasons: list[str] = []
        messages = []
        for _ in range(min(count, limit)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            messages.append(message)
            headers = message.headers or {}
            queue_name = _header_text(headers.get("x-lojasync-queue"))
            reason = _header_text(headers.get("x-lojasync-reason"))
            reasons.append(f"{message.routing_key} from {queue_name}: {reason}")
        for message in messages:
            await message.nack(requeue=True)
    return count, reasons


def _header_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


# --- PostgreSQL -------------------------------------------------------------------------


def _admin_dsn(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


@asynccontextmanager
async def database_refusing_connections(database_url: str) -> AsyncIterator[None]:
    """Make one database look restarted: end its sessions and refuse new ones in the block.

    All test databases share one PostgreSQL server, so a restart of one service's database
    is emulated with `ALLOW_CONNECTIONS false` and `pg_terminate_backend` on its sessions,
    run as the server's admin user in the `postgres` database. Connections are allowed
    again when the block ends, also when it raises.
    """
    database = make_url(database_url).database
    admin = await asyncpg.connect(_admin_dsn(database_url))
    try:
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        try:
            await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def restart_postgres_cluster(database_url: str) -> str:
    """Restart the local PostgreSQL cluster that serves `database_url`'s port.

    Finds the cluster with `pg_lsclusters` and restarts it with `pg_ctlcluster
    --skip-systemctl-redirect <version> <name> restart`; returns "<version>/<name>".
    """
    port = make_url(database_url).port or 5432
    listing = await run_command("pg_lsclusters", "--no-header")
    for line in listing.splitlines():
        columns = line.split()
        if len(columns) >= 3 and columns[2] == str(port):
            version, name = columns[0], columns[1]
            await run_command(
                "pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart"
            )
            return f"{version}/{name}"
    raise RuntimeError(f"pg_lsclusters lists no cluster on port {port}:\n{listing}")


async def wait_postgres_accepting(database_url: str, timeout: float = 120.0) -> None:
    """Wait until the PostgreSQL server of `database_url` accepts connections again."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            connection = await asyncpg.connect(_admin_dsn(database_url), timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            last_error = exc
            await asyncio.sleep(POLL_SECONDS)
            continue
        await connection.close()
        return
    raise TimeoutError(f"PostgreSQL refused connections for {timeout:.0f} s: {last_error}")


# --- Reads through the public APIs ------------------------------------------------------


async def get_json(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    """GET `url` and return the JSON body; raise AssertionError on a status other than 200."""
    response = await client.get(url, params=params or None)
    if response.status_code != 200:
        raise AssertionError(f"GET {url} returned {response.status_code}: {response.text[:500]}")
    return response.json()


async def list_all(
    client: httpx.AsyncClient, base_url: str, entity: str, page_size: int = 1000
) -> dict[str, dict[str, Any]]:
    """Page through `GET {base_url}/v1/records/{entity}` and return the items by record key."""
    items: dict[str, dict[str, Any]] = {}
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": page_size}
        if after is not None:
            params["after"] = after
        page = await get_json(client, f"{base_url}/v1/records/{entity}", **params)
        for item in page["items"]:
            items[item["record_key"]] = item
        after = page["next_after"]
        if after is None:
            return items
