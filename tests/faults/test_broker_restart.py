"""A restart of RabbitMQ in the middle of the stream: the exact final state.

The restart uses this machine's own `rabbitmqctl stop_app` and `start_app`, so every
client of the local broker loses its connections for a while, not only this test's.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.faults.harness import FaultSystem, broker_stopped
from tests.faults.verify import Expectation, assert_exact_final_state, wait_settled
from tests.faults.workload import (
    SEED,
    Progress,
    describe_run,
    run_workload,
    standard_workload,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.broker_restart]

FAULT_AT = 0.4
BATCHES_WHILE_DOWN = 2
MIN_OUTAGE_SECONDS = 8.0
WAIT_SECONDS = 120.0
SETTLE_SECONDS = 180.0


async def test_broker_restart_mid_stream(
    fault_system: FaultSystem, client: httpx.AsyncClient
) -> None:
    stream, customers = standard_workload(fault_system.namespace)
    fault_batch = int(len(stream.batches) * FAULT_AT)

    async def restart_broker(progress: Progress) -> None:
        await progress.wait_batches(fault_batch, WAIT_SECONDS)
        async with broker_stopped():
            stopped = time.monotonic()
            fault_system.note("broker stopped")
            # The gateway takes pushes while the broker is down; they wait in its outbox.
            await progress.wait_batches(fault_batch + BATCHES_WHILE_DOWN, WAIT_SECONDS)
            # The outage lasts at least MIN_OUTAGE_SECONDS: its length is part of the fault.
            await asyncio.sleep(max(0.0, stopped + MIN_OUTAGE_SECONDS - time.monotonic()))
        fault_system.note("broker started")

    run = await run_workload(client, fault_system, stream, customers, restart_broker)
    expectation = Expectation(stream, customers)
    snapshot, waited = await wait_settled(client, fault_system, expectation, SETTLE_SECONDS)
    print(describe_run(run, fault_system, waited))

    await assert_exact_final_state(client, fault_system, expectation, snapshot, run, seed=SEED)
