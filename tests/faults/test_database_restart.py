"""A restart of one service's database in the middle of the stream: the exact final state.

Every test database lives on the same PostgreSQL server, so the restart of one database is
emulated: it refuses new connections and its sessions are ended, for a few seconds. The
last test restarts the whole cluster, which disturbs every other user of the server.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.faults.harness import (
    ORCHESTRATOR,
    FaultSystem,
    database_refusing_connections,
    restart_postgres_cluster,
    wait_postgres_accepting,
)
from tests.faults.verify import Expectation, assert_exact_final_state, wait_settled
from tests.faults.workload import (
    SEED,
    Progress,
    describe_run,
    run_workload,
    standard_workload,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

FAULT_AT = 0.4
# How long the database refuses connections. The outage is the fault itself, so it is a
# fixed time rather than a wait for a condition.
OUTAGE_SECONDS = 5.0
WAIT_SECONDS = 120.0
SETTLE_SECONDS = 180.0


async def _run_with_database_outage(
    system: FaultSystem, client: httpx.AsyncClient, service: str
) -> None:
    stream, customers = standard_workload(system.namespace)
    fault_batch = int(len(stream.batches) * FAULT_AT)

    async def restart_database(progress: Progress) -> None:
        await progress.wait_batches(fault_batch, WAIT_SECONDS)
        async with database_refusing_connections(system.database_urls[service]):
            system.note(f"database of {service} refusing connections")
            await asyncio.sleep(OUTAGE_SECONDS)
        system.note(f"database of {service} accepting connections")

    run = await run_workload(client, system, stream, customers, restart_database)
    expectation = Expectation(stream, customers)
    snapshot, waited = await wait_settled(client, system, expectation, SETTLE_SECONDS)
    print(describe_run(run, system, waited))

    await assert_exact_final_state(client, system, expectation, snapshot, run, seed=SEED)


async def test_orchestrator_database_restart(
    fault_system: FaultSystem, client: httpx.AsyncClient
) -> None:
    await _run_with_database_outage(fault_system, client, ORCHESTRATOR)


async def test_store_database_restart(fault_system: FaultSystem, client: httpx.AsyncClient) -> None:
    await _run_with_database_outage(fault_system, client, "loja-3")


@pytest.mark.db_restart
async def test_postgres_cluster_restart(
    fault_system: FaultSystem, client: httpx.AsyncClient
) -> None:
    stream, customers = standard_workload(fault_system.namespace)
    fault_batch = int(len(stream.batches) * FAULT_AT)
    database_url = fault_system.database_urls[ORCHESTRATOR]

    async def restart_cluster(progress: Progress) -> None:
        await progress.wait_batches(fault_batch, WAIT_SECONDS)
        fault_system.note("PostgreSQL cluster restart started")
        cluster = await restart_postgres_cluster(database_url)
        fault_system.note(f"PostgreSQL cluster {cluster} restarted")
        await wait_postgres_accepting(database_url)
        fault_system.note("PostgreSQL accepting connections")

    run = await run_workload(client, fault_system, stream, customers, restart_cluster)
    expectation = Expectation(stream, customers)
    snapshot, waited = await wait_settled(client, fault_system, expectation, SETTLE_SECONDS)
    print(describe_run(run, fault_system, waited))

    await assert_exact_final_state(client, fault_system, expectation, snapshot, run, seed=SEED)
