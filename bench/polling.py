"""Waiting for a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float,
    description: str,
) -> T:
    """Call `probe` every `interval` seconds until `done` accepts its value; return it.

    Raises TimeoutError with `description` and the last value after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{description} did not happen within {timeout:.0f} s; last seen: {value}"
            )
        await asyncio.sleep(interval)
