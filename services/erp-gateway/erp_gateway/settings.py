"""Settings of the ERP gateway, read from LOJASYNC_* environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from lojasync.settings import CommonSettings, database_url_for

SERVICE_NAME = "erp-gateway"
DEFAULT_DATABASE = "lojasync_gateway"
# Upper bound of the wait between two delivery attempts, whatever the base and attempt.
MAX_BACKOFF_SECONDS = 60.0


class GatewaySettings(CommonSettings):
    """Database, ERP callback and batch limits of the ERP gateway."""

    model_config = SettingsConfigDict(env_prefix="LOJASYNC_", extra="ignore")

    database_url: str = Field(
        default=database_url_for(DEFAULT_DATABASE),
        description="SQLAlchemy URL of the gateway's database",
    )
    erp_callback_url: str | None = Field(
        default=None,
        description="URL the gateway POSTs resolved store changes to; unset means the "
        "deliveries wait in the erp_delivery table",
    )
    erp_callback_token: SecretStr | None = Field(
        default=None, description="bearer token sent to the ERP callback; never logged"
    )
    delivery_max_attempts: int = Field(
        default=12, ge=1, description="attempts per delivery before it is marked failed"
    )
    delivery_backoff_seconds: float = Field(
        default=0.5,
        gt=0,
        description="wait after the first failed attempt, in seconds; doubles per attempt, "
        f"capped at {MAX_BACKOFF_SECONDS:g} s",
    )
    delivery_timeout_seconds: float = Field(
        default=10.0, gt=0, description="timeout of one callback request, in seconds"
    )
    delivery_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="callback requests in flight at once; each carries a different record",
    )
    delivery_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="maximum wait of the delivery worker between two reads of the table, "
        "in seconds",
    )
    max_batch_records: int = Field(
        default=10_000, ge=1, description="maximum number of records in one POST /v1/changes"
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8001, ge=1, le=65535)

    @field_validator("erp_callback_url")
    @classmethod
    def _check_callback_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"LOJASYNC_ERP_CALLBACK_URL={value!r} is invalid: use an http:// or "
                "https:// URL, e.g. http://127.0.0.1:8009/erp/changes"
            )
        return value

    @field_validator("erp_callback_token")
    @classmethod
    def _empty_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        return value

    def backoff_seconds(self, attempts: int) -> float:
        """Return the wait before the next attempt after `attempts` failed attempts."""
        exponent = max(attempts - 1, 0)
        # Cap the exponent first so a large attempt count cannot overflow the float.
        backoff: float = self.delivery_backoff_seconds * 2.0 ** min(exponent, 32)
        return min(MAX_BACKOFF_SECONDS, backoff)
