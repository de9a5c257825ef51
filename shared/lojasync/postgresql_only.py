"""A check for features that run only on PostgreSQL.

Bootstrap, replay, drift detection, repair and onboarding use COPY, advisory locks,
`unnest`, `hashtextextended` and `json_agg`. On another database they stop with
`PostgresqlRequired` before touching anything.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.errors import LojasyncError


class PostgresqlRequired(LojasyncError):
    """A feature that needs PostgreSQL was asked of a service on another database."""

    code = "postgresql_required"

    def __init__(self, feature: str, dialect: str) -> None:
        self.feature = feature
        self.dialect = dialect
        self.message = (
            f"{feature} needs PostgreSQL, but this service runs on {dialect}; point "
            "LOJASYNC_DATABASE_URL at a PostgreSQL database to use it"
        )
        self.message_pt_br = (
            f"{feature} precisa de PostgreSQL, mas este serviço usa {dialect}; aponte "
            "LOJASYNC_DATABASE_URL para um banco PostgreSQL para usá-lo"
        )
        super().__init__(self.message)

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "message_pt_br": self.message_pt_br,
            "feature": self.feature,
            "dialect": self.dialect,
        }


def require_postgresql(engine: AsyncEngine | Engine, feature: str) -> None:
    """Raise PostgresqlRequired unless `engine` talks to PostgreSQL."""
    if engine.dialect.name != "postgresql":
        raise PostgresqlRequired(feature, engine.dialect.name)
