"""Run one store registry: `python -m store_registry` (settings from LOJASYNC_* variables)."""

from __future__ import annotations

import sys

import uvicorn

from lojasync.errors import ConfigurationError
from lojasync.logs import configure_logging
from store_registry.app import SERVICE_NAME, create_app
from store_registry.settings import load_settings


def main() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(
            f"{SERVICE_NAME} cannot start, invalid configuration "
            f"(configuração inválida, o serviço não pode iniciar): {exc}",
            file=sys.stderr,
        )
        raise SystemExit(2) from exc

    configure_logging(settings.log_level, f"{SERVICE_NAME}/{settings.store_id}")
    # log_config=None keeps the logging set up above instead of uvicorn's own.
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
    )


if __name__ == "__main__":
    main()
