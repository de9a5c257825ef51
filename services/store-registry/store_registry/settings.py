"""Settings of one store registry process, read from LOJASYNC_* environment variables."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import SettingsConfigDict

from lojasync.errors import ConfigurationError
from lojasync.settings import CommonSettings, database_url_for

STORE_ID_PATTERN = re.compile(r"[a-z0-9-]{1,40}")
ENV_PREFIX = "LOJASYNC_"


class StoreSettings(CommonSettings):
    """Settings of the store registry; `store_id` is required."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    store_id: str = Field(description="id of this store: 1 to 40 of a-z, 0-9 and '-'")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of this store's database; empty means "
        "lojasync_store_<store id> on the local PostgreSQL server",
    )
    api_url: str = Field(
        default="http://127.0.0.1:8100",
        description="base URL of this store's API, sent to the orchestrator at start-up",
    )
    policy_file: Path | None = Field(
        default=None, description="ownership policy file; empty means the bundled policy"
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8100, ge=1, le=65535)

    @field_validator("store_id")
    @classmethod
    def _check_store_id(cls, value: str) -> str:
        if STORE_ID_PATTERN.fullmatch(value) is None:
            raise ValueError(
                f"LOJASYNC_STORE_ID={value!r} is invalid: use 1 to 40 lower-case letters, "
                "digits and hyphens"
            )
        return value

    @model_validator(mode="after")
    def _default_database_url(self) -> StoreSettings:
        if not self.database_url:
            self.database_url = database_url_for(default_database_name(self.store_id))
        return self


def default_database_name(store_id: str) -> str:
    return f"lojasync_store_{store_id.replace('-', '_')}"


def load_settings() -> StoreSettings:
    """Read the settings from the environment, raising ConfigurationError naming the variable."""
    try:
        return StoreSettings()
    except ValidationError as exc:
        raise ConfigurationError("; ".join(_describe(error) for error in exc.errors())) from exc


def _describe(error: ErrorDetails) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    variable = f"{ENV_PREFIX}{name.upper()}"
    if error["type"] == "missing":
        field = StoreSettings.model_fields.get(name)
        hint = f" ({field.description})" if field is not None and field.description else ""
        return f"{variable} is required but not set; set it{hint}"
    if error["type"] == "value_error":
        # The validators of this module name the variable themselves.
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return f"{variable}={error.get('input')!r} is invalid: {error['msg']}"
