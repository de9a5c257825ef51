"""kill -9 of one service in the middle of the stream, then a restart: the exact final state."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.faults.harness import GATEWAY, ORCHESTRATOR, FaultSystem
from tests.faults.verify import Expectation, assert_exact_final_state, wait_settled
from tests.faults.workload import (
    SEED,
    Progress,
    describe_run,
    run_workload,
    standard_workload,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# The fault starts once this share of the batches is pushed.
FAULT_AT = 0.4
# Batches the ERP pushes while the killed service is down.
BATCHES_WHILE_DOWN = 2
# Customer edits the store accepts before it is killed.
STORE_WRITES_BEFORE_KILL = 3
WAIT_SECONDS = 120.0
SETTLE_SECONDS = 180.0


async def test_orchestrator_kill_mid_stream(
    fault_system: FaultSystem, client: httpx.AsyncClient
) -> None:
    stream, customers = standard_workload(fault_system.namespace)
    fault_batch = int(len(stream.batches) * FAULT_AT)

    async def kill_orchestrator(progress: Progress) -> None:
        await progress.wait_batches(fault_batch, WAIT_SECONDS)
        await fault_system.kill(ORCHESTRATOR)
        await progress.wait_batches(fault_batch + BATCHES_WHILE_DOWN, WAIT_SECONDS)
        await fault_system.restart(ORCHESTRATOR)

    run = await run_workload(client, fault_system, stream, customers, kill_orchestrator)
    expectation = Expectation(stream, customers)
    snapshot, waited = await wait_settled(client, fault_system, expectation, SETTLE_SECONDS)
    print(describe_run(run, fault_system, waited))

    await assert_exact_final_state(client, fault_system, expectation, snapshot, run, seed=SEED)


async def test_gateway_kill_mid_push(fault_system: FaultSystem, client: httpx.AsyncClient) -> None:
    stream, customers = standard_workload(fault_system.namespace)
    fault_batch = int(len(stream.batches) * FAULT_AT)

    async def kill_gateway_during_request(progress: Progress) -> None:
        await progress.wait_request_started(fault_batch, WAIT_SECONDS)
        # Half the median time of a push, so the gateway most likely dies while it
        # validates or commits this batch.
        await asyncio.sleep(progress.median_push_seconds() / 2)
        await fault_system.kill(GATEWAY)
        await progress.wait_until(
            lambda: progress.push_failures >= 1, WAIT_SECONDS, "a failed push"
        )
        await fault_system.restart(GATEWAY)

    run = await run_workload(
        client, fault_system, stream, customers, kill_gateway_during_request, rewind_batches=1
    )
    expectation = Expectation(stream, customers)
    snapshot, waited = await wait_settled(client, fault_system, expectation, SETTLE_SECONDS)
    print(describe_run(run, fault_system, waited))

    assert run.progress.push_failures >= 1, "no push failed, so the kill missed the stream"
    assert any(r.replay for results in run.pusher.results.values() for r in results), (
        "the ERP re-sent no committed batch after the failed push"
    )
    await assert_exact_final_state(client, fault_system, expectation, snapshot, run, seed=SEED)


async def test_store_kill_mid_stream(fault_system: FaultSystem, client: httpx.AsyncClient) -> None:
    stream, customers = standard_workload(fault_system.namespace)
    fault_batch = int(len(stream.batches) * FAULT_AT)
    store_id = "loja-2"

    async def kill_store_after_local_edits(progress: Progress) -> None:
        await progress.wait_batches(fault_batch, WAIT_SECONDS)
        # The store dies right after it accepted a few customer edits, which are then in
        # its outbox, and while the rest of that round of edits is still to come.
        writes = progress.store_writes[store_id] + STORE_WRITES_BEFORE_KILL
        await progress.wait_until(
            lambda: progress.store_writes[store_id] >= writes,
            WAIT_SECONDS,
            f"{STORE_WRITES_BEFORE_KILL} customer writes at {store_id}",
        )
        await fault_system.kill(store_id)
        await progress.wait_batches(fault_batch + BATCHES_WHILE_DOWN, WAIT_SECONDS)
        await fault_system.restart(store_id)

    run = await run_workload(client, fault_system, stream, customers, kill_store_after_local_edits)
    expectation = Expectation(stream, customers)
    snapshot, waited = await wait_settled(client, fault_system, expectation, SETTLE_SECONDS)
    print(describe_run(run, fault_system, waited))

    await assert_exact_final_state(client, fault_system, expectation, snapshot, run, seed=SEED)
