"""The gateway's FastAPI app: ERP pushes in, resolved store changes out to the ERP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from erp_gateway.api import install_error_handlers, router
from erp_gateway.gateway import build_gateway
from erp_gateway.settings import SERVICE_NAME, GatewaySettings
from lojasync.logs import configure_logging
from lojasync.service import ServiceRuntime


def create_app(
    settings: GatewaySettings | None = None,
    runtime: ServiceRuntime | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app; its lifespan starts and stops the runtime and the delivery worker.

    `runtime` defaults to one built from `settings`; `transport` replaces the network
    for the callbacks to the ERP (tests pass an `httpx.ASGITransport`).
    """
    gateway = build_gateway(settings, runtime, transport)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="lojasync erp-gateway", version="0.1.0", lifespan=lifespan)
    app.state.gateway = gateway
    install_error_handlers(app)
    app.include_router(router)
    return app


def main() -> None:
    import uvicorn

    settings = GatewaySettings()
    configure_logging(settings.log_level, SERVICE_NAME)
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None
    )
