"""Wiring of the gateway: one object holding the runtime, the rules and the worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from erp_gateway.delivery import DeliveryWorker
from erp_gateway.handlers import ErpEventHandler
from erp_gateway.settings import SERVICE_NAME, GatewaySettings
from erp_gateway.tables import TABLES
from lojasync.policy import Policy, load_policy
from lojasync.reference import ReferenceTables, load_reference_tables
from lojasync.service import ServiceRuntime, Subscription
from lojasync.topology import ERP_GATEWAY_QUEUE

logger = logging.getLogger(__name__)


@dataclass
class Gateway:
    settings: GatewaySettings
    runtime: ServiceRuntime
    policy: Policy
    tables: ReferenceTables
    worker: DeliveryWorker

    async def start(self) -> None:
        """Create the tables, start consuming the gateway's queue, then start delivering."""
        handler = ErpEventHandler(self.runtime, self.worker.wake)
        await self.runtime.start(
            TABLES, [Subscription(ERP_GATEWAY_QUEUE.consumer, ERP_GATEWAY_QUEUE.bindings, handler)]
        )
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        await self.runtime.stop()


def build_gateway(
    settings: GatewaySettings | None = None,
    runtime: ServiceRuntime | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Gateway:
    """Build the gateway; `transport` replaces the network for the ERP callback (tests)."""
    settings = settings or GatewaySettings()
    runtime = runtime or ServiceRuntime(SERVICE_NAME, settings.database_url, settings)
    return Gateway(
        settings=settings,
        runtime=runtime,
        policy=load_policy(),
        tables=load_reference_tables(),
        worker=DeliveryWorker(runtime.engine, settings, transport=transport),
    )
