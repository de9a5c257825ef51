"""The delivery worker: POSTs pending rows of erp_delivery to the ERP's callback URL.

One POST carries one delivery's payload as JSON. A 2xx response marks it delivered. A 408,
429, 5xx, timeout or connection error schedules another attempt with exponential
backoff until `delivery_max_attempts`; any other response marks it failed at once, with
the reason in `last_error`. The worker wakes when the consumer commits new deliveries
and polls the table as a fallback, so deliveries left by a stopped process go out too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from erp_gateway.domain import DeliveryOutcome, delivery_outcome
from erp_gateway.repository import (
    DueDelivery,
    claim_due_deliveries,
    mark_delivered,
    mark_failed,
    mark_retry,
    next_due_at,
)
from erp_gateway.settings import MAX_BACKOFF_SECONDS, GatewaySettings
from lojasync.messaging import is_transient
from lojasync.persistence import utc_now

logger = logging.getLogger(__name__)

# Characters of the ERP's response body kept in last_error.
_ERROR_BODY_CHARS = 500
# Time a claimed delivery stays hidden from other workers beyond the request timeout.
_LEASE_MARGIN_SECONDS = 30.0


class DeliveryWorker:
    """Delivers pending deliveries in order of creation, each record in revision order."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: GatewaySettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    @property
    def callback_configured(self) -> bool:
        return self._settings.erp_callback_url is not None

    def wake(self) -> None:
        """Ask the worker to look for due deliveries now; writers call this after commit."""
        self._wakeup.set()

    def start(self) -> None:
        headers = {"User-Agent": "lojasync-erp-gateway"}
        token = self._settings.erp_callback_token
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._client = httpx.AsyncClient(
            transport=self._transport,
            headers=headers,
            timeout=self._settings.delivery_timeout_seconds,
            follow_redirects=False,
        )
        if not self.callback_configured:
            logger.warning(
                "LOJASYNC_ERP_CALLBACK_URL is not set; deliveries to the ERP wait in "
                "erp_delivery until it is set and the gateway restarts"
            )
        self._task = asyncio.create_task(self._run(), name="erp delivery worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                attempted = await self.deliver_once() if self.callback_configured else 0
                failures = 0
                if attempted == 0:
                    await self._wait_for_work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, 0.2 * 2 ** min(failures, 16))
                log = logger.warning if is_transient(exc) else logger.error
                log(
                    "delivery worker failed, retrying",
                    extra={
                        "attempt": failures,
                        "delay_seconds": delay,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
                await asyncio.sleep(delay)

    async def _wait_for_work(self) -> None:
        timeout = self._settings.delivery_poll_seconds
        if self.callback_configured:
            async with self._engine.connect() as connection:
                due = await next_due_at(connection)
            if due is not None:
                seconds_until_due = (due - utc_now()).total_seconds()
                timeout = min(timeout, max(seconds_until_due, 0.01))
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)
        except TimeoutError:
            pass

    async def deliver_once(self) -> int:
        """Claim the deliveries due now and attempt each once; return how many were tried."""
        settings = self._settings
        now = utc_now()
        lease = timedelta(seconds=settings.delivery_timeout_seconds + _LEASE_MARGIN_SECONDS)
        async with self._engine.begin() as connection:
            due = await claim_due_deliveries(
                connection,
                now=now,
                lease_until=now + lease,
                limit=settings.delivery_concurrency * 8,
            )
        if not due:
            return 0

        # Claimed deliveries are of distinct records, so concurrent requests keep each
        # record's revision order. The semaphore starts them in claim order.
        semaphore = asyncio.Semaphore(settings.delivery_concurrency)

        async def attempt(delivery: DueDelivery) -> None:
            async with semaphore:
                await self._attempt(delivery)

        outcomes = await asyncio.gather(
            *(attempt(delivery) for delivery in due), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(due)

    async def _attempt(self, delivery: DueDelivery) -> None:
        client = self._client
        url = self._settings.erp_callback_url
        if client is None or url is None:
            raise RuntimeError("DeliveryWorker.deliver_once called before start() or without URL")

        attempts = delivery.attempts + 1
        retry_after: float | None = None
        try:
            response = await client.post(url, json=delivery.payload)
        except httpx.TransportError as exc:
            outcome = DeliveryOutcome.RETRY
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            outcome = delivery_outcome(response.status_code)
            error = f"HTTP {response.status_code}: {response.text[:_ERROR_BODY_CHARS]}"
            retry_after = _retry_after_seconds(response)

        if outcome is DeliveryOutcome.DELIVERED:
            async with self._engine.begin() as connection:
                await mark_delivered(connection, delivery.event_id, attempts=attempts)
            self.delivered += 1
            logger.info("delivered to the ERP", extra=_log_fields(delivery, attempts))
            return

        if outcome is DeliveryOutcome.RETRY and attempts < self._settings.delivery_max_attempts:
            delay = self._settings.backoff_seconds(attempts)
            if retry_after is not None:
                delay = min(MAX_BACKOFF_SECONDS, max(delay, retry_after))
            async with self._engine.begin() as connection:
                await mark_retry(
                    connection,
                    delivery.event_id,
                    attempts=attempts,
                    next_attempt_at=utc_now() + timedelta(seconds=delay),
                    error=error,
                )
            logger.warning(
                "delivery to the ERP failed, retrying",
                extra={**_log_fields(delivery, attempts), "delay_seconds": delay, "error": error},
            )
            return

        if outcome is DeliveryOutcome.RETRY:
            error = f"gave up after {attempts} attempts; last error: {error}"
        async with self._engine.begin() as connection:
            await mark_failed(connection, delivery.event_id, attempts=attempts, error=error)
        logger.error(
            "delivery to the ERP failed; retry it with POST /v1/deliveries/{event_id}/retry",
            extra={**_log_fields(delivery, attempts), "error": error},
        )


def _log_fields(delivery: DueDelivery, attempts: int) -> dict[str, object]:
    return {
        "event_id": delivery.event_id,
        "entity": delivery.entity,
        "record_key": delivery.record_key,
        "revision": delivery.revision,
        "attempt": attempts,
    }


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """Read a Retry-After header given in seconds; the HTTP-date form is ignored."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
