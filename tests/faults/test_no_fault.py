"""The fault tests' stream and checks without a fault: the control for every fault test.

When this test fails, the harness or the system fails without any fault, and a failure
of a fault test is then no evidence against the fault handling.
"""

from __future__ import annotations

import httpx
import pytest

from tests.faults.harness import FaultSystem
from tests.faults.verify import Expectation, assert_exact_final_state, wait_settled
from tests.faults.workload import (
    SEED,
    Progress,
    describe_run,
    run_workload,
    standard_workload,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SETTLE_SECONDS = 180.0


async def test_stream_without_fault(fault_system: FaultSystem, client: httpx.AsyncClient) -> None:
    stream, customers = standard_workload(fault_system.namespace)

    async def no_fault(progress: Progress) -> None:
        return None

    run = await run_workload(client, fault_system, stream, customers, no_fault)
    expectation = Expectation(stream, customers)
    snapshot, waited = await wait_settled(client, fault_system, expectation, SETTLE_SECONDS)
    print(describe_run(run, fault_system, waited))

    await assert_exact_final_state(client, fault_system, expectation, snapshot, run, seed=SEED)
