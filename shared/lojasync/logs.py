"""Logging set-up: one line per record, with the structured fields appended as key=value."""

from __future__ import annotations

import logging
import sys

_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    # uvicorn adds a copy of its message with terminal colour codes.
    "color_message",
}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{name}={value}"
            for name, value in record.__dict__.items()
            if name not in _STANDARD_ATTRIBUTES
        ]
        if fields:
            line = f"{line} | {' '.join(fields)}"
        return line


def configure_logging(level: str = "INFO", service: str = "lojasync") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        KeyValueFormatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
