"""Settings shared by every service, read from LOJASYNC_* environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
# Embedded mode keeps the broker's queues and every service's database in SQLite files
# under this directory, relative to the working directory unless LOJASYNC_DATA_DIR is set.
DEFAULT_DATA_DIR = "var/lojasync"
EMBEDDED_BROKER_SCHEME = "sqlite"

_NAMESPACE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class CommonSettings(BaseSettings):
    """Broker, namespace and tuning settings that every service reads."""

    model_config = SettingsConfigDict(env_prefix="LOJASYNC_", extra="ignore")

    broker_url: str = DEFAULT_BROKER_URL
    namespace: str = Field(
        default="lojasync",
        description="prefix of the exchange and queue names; one per deployment or test",
    )
    partitions: int = Field(
        default=4,
        ge=1,
        le=64,
        description="queues the orchestrator's input is split into; the same on every service",
    )
    prefetch: int = Field(default=1000, ge=1, le=65535, description="unacked messages per consumer")
    batch_max: int = Field(default=500, ge=1, description="messages handled in one transaction")
    batch_linger_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="how long a small batch waits once for more messages, in milliseconds",
    )
    outbox_batch: int = Field(default=1000, ge=1, description="outbox rows published per round")
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    outbox_gather_ms: float = Field(
        default=10.0,
        ge=0,
        le=1000,
        description="how long a woken outbox relay waits at most for the service's other "
        "open transactions to commit, so that one round publishes their events together",
    )
    log_level: str = "INFO"

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not _NAMESPACE.match(value):
            raise ValueError(
                f"LOJASYNC_NAMESPACE={value!r} is invalid: use lower-case letters, digits and "
                "hyphens, starting with a letter (at most 41 characters)"
            )
        return value


def redact_url(url: str) -> str:
    """Return `url` with its password replaced by ***, for messages and logs."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def database_url_for(database: str, server: str = DEFAULT_DATABASE_SERVER) -> str:
    return f"{server.rstrip('/')}/{database}"


def servers_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether the environment names a broker or a database server.

    Either one switches `lojasync demo` from embedded mode (SQLite files and the
    in-process broker) to the RabbitMQ and PostgreSQL servers.
    """
    return bool(environ.get("LOJASYNC_BROKER_URL") or environ.get("LOJASYNC_DATABASE_SERVER"))


def data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("LOJASYNC_DATA_DIR") or DEFAULT_DATA_DIR)


def embedded_broker_url(directory: Path) -> str:
    return f"{EMBEDDED_BROKER_SCHEME}:///{directory / 'broker.sqlite3'}"


def embedded_database_url(database: str, directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / f'{database}.sqlite3'}"


def default_broker_url(environ: Mapping[str, str] = os.environ) -> str:
    """LOJASYNC_BROKER_URL, or the embedded broker's file when it is not set."""
    return environ.get("LOJASYNC_BROKER_URL") or embedded_broker_url(data_dir(environ))
