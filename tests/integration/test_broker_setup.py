"""RabbitMQ without the consistent-hash plugin: a clear error, and a retry that recovers.

The plugin stays enabled on the test server. RabbitMQ treats an exchange type it does not
know as it treats a missing plugin: it closes the connection with COMMAND_INVALID,
"unknown exchange type".
"""

from __future__ import annotations

import logging

import pytest

from bench import machine
from lojasync import messaging
from lojasync.errors import ConfigurationError
from lojasync.messaging import Broker
from lojasync.service import ServiceRuntime
from lojasync.settings import CommonSettings
from tests.conftest import DatabaseFactory
from tests.support import eventually

pytestmark = pytest.mark.integration

UNKNOWN_TYPE = "x-lojasync-missing-plugin"


async def test_missing_plugin_names_the_fix(
    broker_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messaging, "PARTITION_EXCHANGE_TYPE", UNKNOWN_TYPE)
    broker = Broker(broker_url, namespace)

    with pytest.raises(ConfigurationError) as raised:
        await broker.connect(attempts=1)

    assert "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange" in str(raised.value)
    assert broker.connection is None


async def test_service_retries_until_plugin_enabled(
    broker_url: str,
    namespace: str,
    fresh_database: DatabaseFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(messaging, "PARTITION_EXCHANGE_TYPE", UNKNOWN_TYPE)
    settings = CommonSettings(broker_url=broker_url, namespace=namespace)
    runtime = ServiceRuntime("plugin-test", await fresh_database("plugin-test"), settings)
    caplog.set_level(logging.ERROR, logger="lojasync.service")
    try:
        await runtime.start([], [], broker_wait_seconds=1.0)

        assert not runtime.broker_ready
        errors = [record.getMessage() for record in caplog.records]
        assert any("rabbitmq_consistent_hash_exchange" in message for message in errors)

        async def connected() -> bool:
            return runtime.broker_ready

        monkeypatch.setattr(messaging, "PARTITION_EXCHANGE_TYPE", "x-consistent-hash")
        await eventually(connected, timeout=15, what="broker connected")
    finally:
        await runtime.stop()


async def test_bench_probe_tells_plugin_missing(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await machine.has_partition_exchange(broker_url) is True

    monkeypatch.setattr(machine, "PARTITION_EXCHANGE_TYPE", UNKNOWN_TYPE)

    assert await machine.has_partition_exchange(broker_url) is False
