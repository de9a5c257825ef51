"""Fixtures of the fault tests: the running services, and their logs when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import DatabaseFactory, FaultSystem, start_system

_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test's call phase failed, for the fixtures' teardown."""
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


@pytest.fixture
async def fault_system(
    request: pytest.FixtureRequest,
    broker_url: str,
    namespace: str,
    fresh_database: DatabaseFactory,
    tmp_path: Path,
) -> AsyncIterator[FaultSystem]:
    """Every service as a child process, in a fresh namespace with fresh databases.

    The processes are stopped after the test, also when it fails. After a failure the
    last lines of every service's log are printed; the logs stay in the test's tmp_path.
    """
    system = await start_system(
        broker_url=broker_url,
        namespace=namespace,
        fresh_database=fresh_database,
        log_dir=tmp_path / "logs",
    )
    try:
        yield system
    finally:
        await system.stop()
        if request.node.stash.get(_CALL_FAILED, False):
            print(f"\nService logs are in {system.log_dir}; their last lines:")
            print(system.log_tails())


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as http_client:
        yield http_client
