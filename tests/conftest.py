"""Fixtures shared by every test: server URLs, a fresh namespace and fresh databases.

Integration tests talk to the real RabbitMQ and PostgreSQL. Their URLs come from
LOJASYNC_TEST_BROKER_URL and LOJASYNC_TEST_DATABASE_SERVER, with the localhost servers
as defaults. Where neither variable is set, no server answers on localhost and a Docker
engine exists, testcontainers starts both servers for the session.

Scenario tests take the `backend` fixture instead, which runs each of them twice: on
the servers, and in embedded mode (SQLite files and the in-process broker), so the
embedded broker cannot drift from RabbitMQ's behaviour unnoticed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest

from lojasync.persistence import drop_database, ensure_database
from lojasync.settings import (
    DEFAULT_BROKER_URL,
    DEFAULT_DATABASE_SERVER,
    database_url_for,
    embedded_broker_url,
    embedded_database_url,
)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


def _servers_required() -> bool:
    return os.environ.get("LOJASYNC_REQUIRE_SERVERS", "") not in ("", "0")


# Set when the `servers` fixture resolves, for the clean-up at the end of the session.
_session_broker_url: str | None = None


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """(broker URL, database server URL) for the whole session.

    Tests that need the servers are skipped, with the reason, when none is configured,
    none listens on localhost and no Docker engine can start them; with
    LOJASYNC_REQUIRE_SERVERS=1 (as CI sets) they fail instead.
    """
    global _session_broker_url
    broker_url = os.environ.get("LOJASYNC_TEST_BROKER_URL")
    database_server = os.environ.get("LOJASYNC_TEST_DATABASE_SERVER")
    configured = broker_url is not None or database_server is not None
    local = _port_open("127.0.0.1", 5672) and _port_open("127.0.0.1", 5432)
    if configured or local:
        _session_broker_url = broker_url or DEFAULT_BROKER_URL
        yield _session_broker_url, database_server or DEFAULT_DATABASE_SERVER
        return
    if not _docker_available():
        reason = (
            "needs RabbitMQ and PostgreSQL: nothing answers on 127.0.0.1:5672 and "
            "127.0.0.1:5432, LOJASYNC_TEST_BROKER_URL and LOJASYNC_TEST_DATABASE_SERVER are "
            "not set, and no Docker engine can start them"
        )
        if _servers_required():
            pytest.fail(f"LOJASYNC_REQUIRE_SERVERS is set, but this test {reason}")
        pytest.skip(reason)

    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with (
        PostgresContainer("postgres:15", driver="asyncpg") as postgres,
        RabbitMqContainer("rabbitmq:3.13") as rabbitmq,
    ):
        host = rabbitmq.get_container_host_ip()
        port = rabbitmq.get_exposed_port(5672)
        server = postgres.get_connection_url().rsplit("/", 1)[0]
        _session_broker_url = f"amqp://guest:guest@{host}:{port}/"
        yield _session_broker_url, server


@pytest.fixture(scope="session")
def broker_url(servers: tuple[str, str]) -> str:
    return servers[0]


@pytest.fixture(scope="session")
def database_server(servers: tuple[str, str]) -> str:
    return servers[1]


TEST_NAMESPACE_PREFIX = "t-"
_namespaces_used: set[str] = set()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so each test gets fresh exchanges and queues."""
    name = f"{TEST_NAMESPACE_PREFIX}{uuid.uuid4().hex[:10]}"
    _namespaces_used.add(name)
    return name


def _broker_objects(kind: str, namespaces: set[str]) -> list[str]:
    """Names of the local broker's queues or exchanges in `namespaces`, via rabbitmqctl."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return []
    try:
        listed = subprocess.run(
            [rabbitmqctl, "-q", f"list_{kind}", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [name for name in listed.stdout.split() if name.split(".", 1)[0] in namespaces]


@pytest.fixture(scope="session", autouse=True)
async def _delete_test_namespaces() -> AsyncIterator[None]:
    """Delete the queues and exchanges of this session's namespaces when it ends.

    Only names this session handed out are deleted, so test runs side by side on one
    broker leave each other alone. Nothing is deleted when no test used the servers.
    """
    yield
    broker_url = _session_broker_url
    if not _namespaces_used or broker_url is None:
        return
    queues = _broker_objects("queues", _namespaces_used)
    exchanges = _broker_objects("exchanges", _namespaces_used)
    if not queues and not exchanges:
        return
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


DatabaseFactory = Callable[[str], Awaitable[str]]


@pytest.fixture
async def fresh_database(database_server: str) -> AsyncIterator[DatabaseFactory]:
    """Create uniquely named databases for one test and drop them afterwards."""
    created: list[str] = []

    async def create(label: str) -> str:
        name = f"lt_{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        url = database_url_for(name, database_server)
        await ensure_database(url)
        created.append(url)
        return url

    yield create
    for url in created:
        await drop_database(url)


@dataclass(frozen=True)
class Backend:
    """Where a scenario test's services keep their queues and databases."""

    mode: str
    """"servers" (RabbitMQ and PostgreSQL) or "embedded" (SQLite files, in-process broker)."""
    broker_url: str
    fresh_database: DatabaseFactory


@pytest.fixture(params=["servers", "embedded"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "servers":
        return Backend(
            "servers",
            request.getfixturevalue("broker_url"),
            request.getfixturevalue("fresh_database"),
        )

    directory = tmp_path / "embedded"

    async def create(label: str) -> str:
        return embedded_database_url(f"{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}", directory)

    return Backend("embedded", embedded_broker_url(directory), create)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each distinct reason for skipped tests once, with how many it skipped."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        return
    terminalreporter.section("skipped tests")
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.line(f"{count} skipped: {reason}")
