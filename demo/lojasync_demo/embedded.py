"""Every lojasync service in this process: embedded mode, with no server to install.

The orchestrator, the ERP gateway, the ERP stand-in and the store registries run as
ASGI apps in one event loop, each served by its own uvicorn server on its own port, as
the separate processes would be. Their databases are SQLite files and their broker is
the embedded one, persisted in a SQLite file beside them, so everything survives a
restart of the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from erp_gateway.app import create_app as create_gateway_app
from erp_gateway.settings import GatewaySettings
from lojasync.persistence import drop_database
from lojasync.settings import embedded_broker_url, embedded_database_url
from lojasync_demo.erp_standin import ErpStandinSettings
from lojasync_demo.erp_standin import create_app as create_standin_app
from store_registry.app import create_app as create_store_app
from store_registry.settings import StoreSettings
from sync_orchestrator.app import create_app as create_orchestrator_app
from sync_orchestrator.settings import OrchestratorSettings

logger = logging.getLogger(__name__)


class _InProcessServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone.

    Several servers share this process; the program that runs them decides what
    Ctrl+C and SIGTERM do, and stops every server.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class EmbeddedLayout:
    """Ports and data directory of the embedded services."""

    directory: Path
    namespace: str
    store_ids: tuple[str, ...]
    orchestrator_port: int
    gateway_port: int
    erp_port: int
    first_store_port: int

    @property
    def broker_url(self) -> str:
        return embedded_broker_url(self.directory)

    def database_url(self, name: str) -> str:
        return embedded_database_url(name.replace("-", "_"), self.directory)

    def store_port(self, store_id: str) -> int:
        return self.first_store_port + self.store_ids.index(store_id)

    def database_urls(self) -> list[str]:
        names = ("orchestrator", "gateway", "erp", *self.store_ids)
        return [self.database_url(name) for name in names]


@dataclass
class EmbeddedServices:
    """The services of `layout`, started together in this event loop and stopped together."""

    layout: EmbeddedLayout
    _servers: list[tuple[str, _InProcessServer, asyncio.Task[None]]] = field(default_factory=list)

    async def reset(self) -> None:
        """Delete the broker's and the services' files, so the next start is from nothing."""
        for url in self.layout.database_urls():
            await drop_database(url)
        broker_file = self.layout.directory / "broker.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            broker_file.with_name(broker_file.name + suffix).unlink(missing_ok=True)

    async def start(self) -> None:
        """Start every service; raise RuntimeError naming the one that fails to start."""
        layout = self.layout
        layout.directory.mkdir(parents=True, exist_ok=True)
        common: dict[str, Any] = {"broker_url": layout.broker_url, "namespace": layout.namespace}
        try:
            await self._serve(
                "sync-orchestrator",
                create_orchestrator_app(
                    OrchestratorSettings(**common, database_url=layout.database_url("orchestrator"))
                ),
                layout.orchestrator_port,
            )
            await self._serve(
                "erp-standin",
                create_standin_app(ErpStandinSettings(database_url=layout.database_url("erp"))),
                layout.erp_port,
            )
            await self._serve(
                "erp-gateway",
                create_gateway_app(
                    GatewaySettings(
                        **common,
                        database_url=layout.database_url("gateway"),
                        erp_callback_url=f"http://127.0.0.1:{layout.erp_port}/erp/changes",
                    )
                ),
                layout.gateway_port,
            )
            for store_id in layout.store_ids:
                port = layout.store_port(store_id)
                await self._serve(
                    f"store-registry {store_id}",
                    create_store_app(
                        StoreSettings(
                            **common,
                            store_id=store_id,
                            database_url=layout.database_url(store_id),
                            api_url=f"http://127.0.0.1:{port}",
                        )
                    ),
                    port,
                )
        except BaseException:
            await self.stop()
            raise

    async def _serve(self, name: str, app: FastAPI, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
        server = _InProcessServer(config)
        task = asyncio.create_task(server.serve(), name=f"uvicorn {name}")
        self._servers.append((name, server, task))
        while not server.started:
            if task.done():
                error = task.exception()
                raise RuntimeError(f"{name} did not start on port {port}: {error or 'it exited'}")
            await asyncio.sleep(0.05)
        logger.info("service started in this process", extra={"service": name, "port": port})

    async def stop(self) -> None:
        """Stop the services in the reverse order of their start and wait for each."""
        while self._servers:
            name, server, task = self._servers.pop()
            server.should_exit = True
            try:
                await asyncio.wait_for(task, timeout=30)
            except (TimeoutError, asyncio.CancelledError, Exception) as exc:
                logger.warning(
                    "service did not stop cleanly: %s",
                    exc,
                    extra={"service": name, "error": f"{type(exc).__name__}: {exc}"},
                )
