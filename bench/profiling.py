"""Record a service with py-spy and summarize where its samples went.

py-spy's raw format has one line per distinct stack: the frames from the outermost to
the innermost, separated by ";", each as `function (file:line)`, then a space and the
number of samples with that stack.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from bench.results import FunctionCost, ServiceProfile

# Project packages, recognized anywhere in a frame's file path.
PROJECT_PACKAGES = ("lojasync", "store_registry", "sync_orchestrator", "erp_gateway", "bench")

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
_STDLIB = re.compile(r"/lib/python3\.\d+/(?P<module>[^/]+)")


class ProfilerUnavailable(Exception):
    """py-spy is not installed or could not record the process."""


def frame_function(frame: str) -> str:
    """Return `function (file)` for a raw frame, dropping the line number."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({match['file']})"


def frame_package(frame: str) -> str:
    """Return the top-level package of a frame's code, e.g. `sqlalchemy` or `asyncio`."""
    match = _FRAME.match(frame)
    path = match["file"] if match is not None else frame
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    stdlib = _STDLIB.search(path)
    if stdlib is not None:
        return stdlib["module"].removesuffix(".py")
    parts = path.split("/")
    for part in parts:
        if part in PROJECT_PACKAGES:
            return part
    # py-spy shortens paths on sys.path to the module path, e.g. `sqlalchemy/sql/base.py`
    # or `threading.py`.
    return parts[0].removesuffix(".py")


def summarize_raw(service: str, raw_path: str, raw: str, *, top: int = 15) -> ServiceProfile:
    """Summarize py-spy raw output.

    Returns the `top` functions by own samples, the `top` functions of the project's
    packages by total samples, and the own samples per package. Lines that do not end in
    a sample count are skipped.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count

        own[frame_function(frames[-1])] += count
        packages[frame_package(frames[-1])] += count
        for function in {frame_function(frame) for frame in frames}:
            total[function] += count

    top_own = tuple(
        FunctionCost(function, samples_own, total[function])
        for function, samples_own in _largest_first(own)[:top]
    )
    project = [
        (function, count)
        for function, count in _largest_first(total)
        if frame_package(function) in PROJECT_PACKAGES
    ]
    top_project = tuple(
        FunctionCost(function, own[function], count) for function, count in project[:top]
    )
    return ServiceProfile(
        service=service,
        raw_path=raw_path,
        samples=samples,
        top_own=top_own,
        top_project_total=top_project,
        own_by_package=tuple(_largest_first(packages)),
    )


def _largest_first(counts: Counter[str]) -> list[tuple[str, int]]:
    """Sort by count, largest first, and ties by name, so the output is reproducible."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def find_py_spy() -> str:
    """Return the py-spy executable beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise ProfilerUnavailable(
            "py-spy is not installed; install it with `.venv/bin/pip install py-spy` "
            "or run without --profile"
        )
    return found


async def record(pid: int, seconds: float, output: Path) -> None:
    """Run `py-spy record -p PID -d SECONDS -f raw -o OUTPUT` and wait for it.

    Raises ProfilerUnavailable when py-spy exits with an error, with its output.
    """
    process = await asyncio.create_subprocess_exec(
        find_py_spy(),
        "record",
        "-p",
        str(pid),
        "-d",
        str(max(1, round(seconds))),
        "-f",
        "raw",
        "-o",
        str(output),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await process.communicate()
    if process.returncode != 0:
        raise ProfilerUnavailable(
            f"py-spy exited with status {process.returncode} while recording pid {pid}: "
            f"{stdout.decode(errors='replace').strip()}"
        )
