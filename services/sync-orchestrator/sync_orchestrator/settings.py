from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lojasync.settings import CommonSettings, database_url_for


class OrchestratorSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="LOJASYNC_", extra="ignore")

    database_url: str = database_url_for("lojasync_orchestrator")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    drift_check_seconds: float = Field(
        default=0.0,
        ge=0,
        description="seconds between drift checks of every known store; 0 turns them off",
    )
