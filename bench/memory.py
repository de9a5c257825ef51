"""Resident memory of a process, read from /proc/<pid>/status (Linux only)."""

from __future__ import annotations

import asyncio
from pathlib import Path


class ProcessGone(Exception):
    """The process exited, so /proc has no status for it."""


def read_status_kib(pid: int, field: str, proc: Path = Path("/proc")) -> int:
    """Return a kB field of /proc/<pid>/status, such as VmRSS or VmHWM (units of 1024 bytes).

    VmHWM is the peak resident set size since the process started. Raises ProcessGone
    when the process no longer exists and KeyError when the field is missing.
    """
    try:
        status = (proc / str(pid) / "status").read_text()
    except FileNotFoundError as exc:
        raise ProcessGone(f"process {pid} has exited; its memory cannot be read") from exc
    return parse_status_kib(status, field)


def parse_status_kib(status: str, field: str) -> int:
    """Return the value of `field` from the text of /proc/<pid>/status, in kB."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise KeyError(f"/proc/<pid>/status has no {field} line")


class RssSampler:
    """Samples VmRSS of one process at a fixed interval until stopped."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.samples_kib: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"rss sampler {self.pid}")

    async def stop(self) -> list[int]:
        """Stop sampling and return the samples taken, in kB."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        return self.samples_kib

    async def _run(self) -> None:
        while True:
            try:
                self.samples_kib.append(read_status_kib(self.pid, "VmRSS"))
            except ProcessGone:
                return
            await asyncio.sleep(self.interval)
