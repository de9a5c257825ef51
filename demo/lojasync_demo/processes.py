"""Start and stop the lojasync services as child processes, for the demo and the fault tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx


@dataclass
class ServiceProcess:
    name: str
    module: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class PortInUse(Exception):
    def __init__(self, service: str, port: int) -> None:
        super().__init__(f"port {port} for {service} is in use")
        self.service = service
        self.port = port


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def ensure_ports_free(services: list[ServiceProcess]) -> None:
    for service in services:
        if port_in_use(service.port):
            raise PortInUse(service.name, service.port)


@dataclass
class ProcessGroup:
    """Child processes started together and stopped together."""

    services: list[ServiceProcess] = field(default_factory=list)

    async def start(self, service: ServiceProcess) -> None:
        """Start `service` with a new log file and add it to the group."""
        await self._spawn(service, log_mode="wb")
        self.services.append(service)

    def get(self, name: str) -> ServiceProcess:
        """Return the service of the group called `name`."""
        for service in self.services:
            if service.name == name:
                return service
        known = ", ".join(service.name for service in self.services)
        raise KeyError(f"no service {name!r} in the group; the group has: {known}")

    async def kill(
        self, name: str, sig: signal.Signals = signal.SIGKILL, timeout: float = 15.0
    ) -> int:
        """Send `sig` to the service's process, wait until it exits and return its status.

        Raises TimeoutError when the process is still running after `timeout` seconds.
        """
        service = self.get(name)
        process = service.process
        if process is None or process.returncode is not None:
            raise RuntimeError(f"{name} is not running, so it cannot receive {sig.name}")
        process.send_signal(sig)
        return await asyncio.wait_for(process.wait(), timeout)

    async def restart(self, name: str) -> None:
        """Start an exited service again, on the same port and environment.

        The new process appends to the service's log file, so the log keeps what the
        previous process wrote. Call `wait_ready` afterwards.
        """
        service = self.get(name)
        if service.process is not None and service.process.returncode is None:
            raise RuntimeError(f"{name} is still running (pid {service.process.pid})")
        await self._spawn(service, log_mode="ab")

    async def _spawn(self, service: ServiceProcess, *, log_mode: Literal["wb", "ab"]) -> None:
        if port_in_use(service.port):
            raise PortInUse(service.name, service.port)
        service.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = service.log_path.open(log_mode)
        env = {
            **os.environ,
            **service.env,
            "LOJASYNC_HTTP_HOST": "127.0.0.1",
            "LOJASYNC_HTTP_PORT": str(service.port),
        }
        service.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", service.module, env=env, stdout=log, stderr=log
        )
        log.close()

    async def wait_ready(self, timeout: float = 60.0, names: Collection[str] | None = None) -> None:
        """Wait until `/ready` of every service (or of those in `names`) returns 200.

        Raises RuntimeError when a process exits and TimeoutError at the deadline.
        """
        deadline = time.monotonic() + timeout
        services = [s for s in self.services if names is None or s.name in names]
        async with httpx.AsyncClient(timeout=2.0) as client:
            for service in services:
                while True:
                    if service.process is not None and service.process.returncode is not None:
                        raise RuntimeError(
                            f"{service.name} exited with status {service.process.returncode}; "
                            f"see {service.log_path}"
                        )
                    try:
                        response = await client.get(f"{service.url}/ready")
                        if response.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{service.name} was not ready within {timeout:.0f} s; "
                            f"see {service.log_path}"
                        )
                    await asyncio.sleep(0.2)

    async def stop(self, timeout: float = 15.0) -> None:
        for service in reversed(self.services):
            process = service.process
            if process is None or process.returncode is not None:
                continue
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.services.clear()
