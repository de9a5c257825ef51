"""Settings shared by every service, read from LOJASYNC_* environment variables."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"

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
    outbox_batch: int = Field(default=1000, ge=1, description="outbox rows published per round")
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
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
