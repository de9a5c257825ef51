"""An in-process message broker persisted in a SQLite file, for lojasync's embedded mode.

`EmbeddedBroker` has the public surface of `lojasync.messaging.Broker` and declares the
same topology (see `lojasync.topology`), so services and `BatchConsumer` cannot tell the
two apart. The brokers of every service in one process that name the same file share one
`Hub`: one SQLite connection, the exchanges and bindings, and the delivery state.

Routing follows RabbitMQ's rules. A topic exchange matches routing keys word by word
(`*` is one word, `#` is zero or more), and a fanout exchange copies to every bound queue.
The headers exchange in front of the orchestrator's partitions delivers a message to the
queues bound with its partition header's value, and a message no such binding matched to
the queues bound with the empty value (partition 0), as RabbitMQ's alternate exchange does
there. A message reaches each matching queue once.

Persistence: the queues' messages are rows of the `messages` table, in id order. A
`publish` inserts one row per (message, queue) in one transaction, so when it returns the
whole list is committed (the counterpart of RabbitMQ's publisher confirms). An ack deletes
the row. Which deliveries are unacked lives only in memory, so after a restart every row
left is delivered again, in order. The connection uses WAL with `synchronous=NORMAL`, so
a commit survives a crash of the process, but one made after the last WAL checkpoint may
roll back after a power loss or an operating-system crash (SQLite's documentation of
PRAGMA synchronous). Deleted rows leave free pages that later messages reuse, so the file
does not shrink when the queues drain.

Delivery: each queue with a consumer has one dispatcher task. A publish, an ack or a
requeue wakes it through an `asyncio.Event`, and it reads rows in pages of at most
`_PAGE_SIZE` while the active consumer has prefetch room, so a large queue never sits in
memory. Every queue has a single active consumer: the first one attached gets every
delivery until it is cancelled, and its unacked messages then go to the next one, first.
RabbitMQ does this only on the orchestrator's partition queues and spreads the messages of
other queues over their consumers, but each lojasync service consumes a queue only once.

NOTE: all SQLite calls are synchronous and run on the event loop thread. Each is a short
transaction, but a write waits up to `_BUSY_TIMEOUT_MS` while another process (such as
`lojasync dead-letters republish`) holds the write lock. Consumers of one file must all
live in one process: a second process consuming the same queues would deliver the same
rows again, because delivery state is not shared between processes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, cast

import orjson
from aio_pika.abc import AbstractQueue

from lojasync.envelope import CONTENT_TYPE
from lojasync.errors import BrokerUnavailable, ConfigurationError, LojasyncError
from lojasync.messaging import (
    BatchConsumer,
    BatchHandler,
    Broker,
    HealthCheck,
    NamespaceNames,
    dead_letter_headers,
    log_dead_lettered,
    partition_header,
)
from lojasync.persistence import OutgoingEvent
from lojasync.topology import (
    ERP_GATEWAY_QUEUE,
    ORCHESTRATOR_INPUT_BINDINGS,
    PARTITION_HEADER,
    orchestrator_partition,
    store_queue,
)

logger = logging.getLogger(__name__)

URL_SCHEME = "sqlite:///"

# Rows read per SQLite query while a consumer has prefetch room.
_PAGE_SIZE = 500
# How long a write waits for another process's write lock before it fails.
_BUSY_TIMEOUT_MS = 5000
# How often a hub checks whether another process committed to its file (seconds).
_FOREIGN_WRITE_POLL_SECONDS = 1.0
# Routing keys remembered per exchange. The cache is emptied when it is full.
_ROUTE_CACHE_SIZE = 4096

TOPIC = "topic"
FANOUT = "fanout"
# Matches one header, named in the exchange's `hash_header` column, against the binding's
# pattern: the value a queue takes. Bindings with the empty pattern take what none matched.
HEADERS = "headers"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    hash_header TEXT
);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS bindings (
    id INTEGER PRIMARY KEY,
    exchange TEXT NOT NULL,
    destination TEXT NOT NULL,
    to_exchange INTEGER NOT NULL,
    pattern TEXT NOT NULL,
    UNIQUE (exchange, destination, to_exchange, pattern)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT,
    type TEXT,
    content_type TEXT,
    headers BLOB,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, id);
"""

_MESSAGE_COLUMNS = "id, queue, routing_key, message_id, type, content_type, headers, body"

DeliveryCallback = Callable[["EmbeddedMessage"], Awaitable[Any]]


class DeliveryNotOutstanding(LojasyncError):
    """An ack, nack or reject named a delivery that is already settled or was requeued
    because its consumer was cancelled."""


class QueueNotFound(LojasyncError):
    """A consumer or command named a queue that was never declared in the broker file."""

    def __init__(self, queue: str, path: Path) -> None:
        super().__init__(
            f"queue {queue!r} is not declared in {path}; declare it with "
            "EmbeddedBroker.declare_queue or pass its bindings to consume"
        )
        self.queue = queue
        self.path = path


def path_from_url(url: str) -> Path:
    """Return the absolute file path of a `sqlite:///path` broker URL.

    `sqlite:///var/broker.sqlite3` is relative to the working directory and
    `sqlite:////srv/broker.sqlite3` is absolute.
    """
    if not url.startswith(URL_SCHEME) or len(url) == len(URL_SCHEME):
        raise ConfigurationError(
            f"LOJASYNC_BROKER_URL {url!r} is not an embedded broker URL; use "
            "sqlite:///relative/path.sqlite3 or sqlite:////absolute/path.sqlite3"
        )
    return Path(url.removeprefix(URL_SCHEME)).expanduser().resolve()


def is_embedded_url(url: str) -> bool:
    """Return whether `url` names an embedded broker file rather than a RabbitMQ server."""
    return url.startswith("sqlite:")


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Return whether topic binding `pattern` matches `routing_key` by AMQP 0-9-1 rules."""
    return _words_match(tuple(_words(pattern)), tuple(_words(routing_key)))


def _words(dotted: str) -> list[str]:
    # An empty routing key has no words, so only `#` (or an empty pattern) matches it.
    return dotted.split(".") if dotted else []


@lru_cache(maxsize=65536)
def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    # matched[j] is True when the pattern words seen so far match the first j key words.
    matched = [True] + [False] * len(words)
    for token in pattern:
        if token == "#":
            seen = False
            widened = []
            for reachable in matched:
                seen = seen or reachable
                widened.append(seen)
            matched = widened
        else:
            matched = [False] + [
                matched[j] and (token == "*" or token == words[j]) for j in range(len(words))
            ]
    return matched[-1]


class StoredMessage(NamedTuple):
    """One row of the `messages` table: a message waiting in one queue."""

    id: int
    queue: str
    routing_key: str
    message_id: str | None
    type: str | None
    content_type: str | None
    headers: dict[str, Any]
    body: bytes

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StoredMessage:
        row_id, queue, routing_key, message_id, kind, content_type, headers, body = row
        return cls(
            id=row_id,
            queue=queue,
            routing_key=routing_key,
            message_id=message_id,
            type=kind,
            content_type=content_type,
            headers=orjson.loads(headers) if headers else {},
            body=bytes(body),
        )


@dataclass(frozen=True)
class _Binding:
    destination: str
    to_exchange: bool
    pattern: str


@dataclass
class _Exchange:
    name: str
    kind: str
    hash_header: str | None
    bindings: list[_Binding] = field(default_factory=list)
    # Topic and fanout exchanges: routing key -> the bindings it matches.
    route_cache: dict[str, tuple[_Binding, ...]] = field(default_factory=dict)

    def matching(self, routing_key: str) -> tuple[_Binding, ...]:
        found = self.route_cache.get(routing_key)
        if found is None:
            if self.kind == TOPIC:
                found = tuple(b for b in self.bindings if topic_matches(b.pattern, routing_key))
            else:
                found = tuple(self.bindings)
            if len(self.route_cache) >= _ROUTE_CACHE_SIZE:
                self.route_cache.clear()
            self.route_cache[routing_key] = found
        return found


class _Topology:
    """The exchanges, bindings and queues of a broker file, kept in memory for routing."""

    def __init__(
        self,
        exchanges: Sequence[tuple[str, str, str | None]],
        bindings: Sequence[tuple[str, str, int, str]],
        queues: Sequence[tuple[str]],
    ) -> None:
        self.exchanges = {
            name: _Exchange(name, kind, hash_header) for name, kind, hash_header in exchanges
        }
        for exchange, destination, to_exchange, pattern in bindings:
            if exchange in self.exchanges:
                self.exchanges[exchange].bindings.append(
                    _Binding(destination, bool(to_exchange), pattern)
                )
        self.queues = {name for (name,) in queues}

    def has_binding(self, exchange: str, binding: _Binding) -> bool:
        return exchange in self.exchanges and binding in self.exchanges[exchange].bindings

    def route(self, exchange: str, routing_key: str, headers: dict[str, Any]) -> list[str]:
        """Return the queues a message reaches from `exchange`, each once, in binding order."""
        queues: dict[str, None] = {}
        self._route_into(exchange, routing_key, headers, queues, set())
        return list(queues)

    def _route_into(
        self,
        name: str,
        routing_key: str,
        headers: dict[str, Any],
        queues: dict[str, None],
        visited: set[str],
    ) -> None:
        exchange = self.exchanges.get(name)
        if exchange is None or name in visited:
            return
        visited.add(name)
        if exchange.kind == HEADERS:
            value = headers.get(exchange.hash_header or "")
            matched = [b for b in exchange.bindings if b.pattern and b.pattern == value]
            for binding in matched or [b for b in exchange.bindings if not b.pattern]:
                if not binding.to_exchange:
                    queues.setdefault(binding.destination)
            return
        for binding in exchange.matching(routing_key):
            if binding.to_exchange:
                self._route_into(binding.destination, routing_key, headers, queues, visited)
            else:
                queues.setdefault(binding.destination)


class EmbeddedMessage:
    """A delivery of one stored message to one consumer, with AMQP-style settlement."""

    __slots__ = ("_consumer", "delivery_tag", "redelivered", "stored")

    def __init__(
        self, stored: StoredMessage, consumer: _Consumer, delivery_tag: int, redelivered: bool
    ) -> None:
        self.stored = stored
        self._consumer = consumer
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered

    @property
    def body(self) -> bytes:
        return self.stored.body

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.stored.headers)

    @property
    def message_id(self) -> str | None:
        return self.stored.message_id

    @property
    def type(self) -> str | None:
        return self.stored.type

    @property
    def content_type(self) -> str | None:
        return self.stored.content_type

    @property
    def routing_key(self) -> str:
        return self.stored.routing_key

    async def ack(self, multiple: bool = False) -> None:
        """Delete this message (and with `multiple`, every earlier unacked delivery of
        the same consumer) from the broker file."""
        self._consumer.hub.settle(self._consumer, self.delivery_tag, multiple, requeue=False)

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        """Return the message to the head of its queue, or delete it if not `requeue`."""
        self._consumer.hub.settle(self._consumer, self.delivery_tag, multiple, requeue=requeue)

    async def reject(self, requeue: bool = False) -> None:
        self._consumer.hub.settle(self._consumer, self.delivery_tag, False, requeue=requeue)


@dataclass(eq=False)
class _Consumer:
    hub: Hub
    tag: str
    queue: _QueueState
    callback: DeliveryCallback
    prefetch: int
    cancelled: bool = False
    # Unacked deliveries by delivery tag, in delivery order.
    outstanding: dict[int, EmbeddedMessage] = field(default_factory=dict)
    last_tag: int = 0

    def room(self) -> int:
        if self.prefetch <= 0:
            return _PAGE_SIZE
        return self.prefetch - len(self.outstanding)


@dataclass(eq=False)
class _QueueState:
    """Delivery state of one queue: its consumers (the first is active), how far it was
    read, and the rows that were delivered once and then returned to the queue."""

    name: str
    consumers: list[_Consumer] = field(default_factory=list)
    # Highest row id ever fetched for delivery; newer rows have higher ids.
    cursor: int = 0
    # Ids of rows returned to the queue (nack or cancelled consumer): delivered first.
    requeued: list[int] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    dispatcher: asyncio.Task[None] | None = None

    def requeue(self, row_id: int) -> None:
        heapq.heappush(self.requeued, row_id)

    def forget(self) -> None:
        self.cursor = 0
        self.requeued.clear()


class Hub:
    """One SQLite broker file opened in this process, shared by its `EmbeddedBroker`s.

    Obtain it from `acquire_hub`, which opens each file once per process.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self.references = 0
        self._connection = connection
        self.topology = _Topology([], [], [])
        self._states: dict[str, _QueueState] = {}
        self._consumers: dict[str, _Consumer] = {}
        self._consumer_ids = itertools.count(1)
        self._data_version = self._read_data_version()
        self._watcher: asyncio.Task[None] | None = None
        self.closed = False
        self.load_topology()

    # Opening and closing

    @classmethod
    def open(cls, path: Path) -> Hub:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            hub = cls(path, connection)
        except BaseException:
            connection.close()
            raise
        hub._watcher = asyncio.get_running_loop().create_task(
            hub._watch_foreign_writes(), name=f"embedded broker watcher {path}"
        )
        logger.info("embedded broker file opened", extra={"path": str(path)})
        return hub

    async def close(self) -> None:
        self.closed = True
        tasks = [state.dispatcher for state in self._states.values() if state.dispatcher]
        if self._watcher is not None:
            tasks.append(self._watcher)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._states.clear()
        self._consumers.clear()
        self._connection.close()
        logger.info("embedded broker file closed", extra={"path": str(self.path)})

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction.

        Operational errors (the file is locked, unwritable or full) become
        BrokerUnavailable, so callers retry them like a RabbitMQ outage.
        """
        if self.closed:
            raise BrokerUnavailable(f"the embedded broker file {self.path} is closed")
        try:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise BrokerUnavailable(
                f"writing to the embedded broker file {self.path} failed: {exc}"
            ) from exc

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.closed:
            raise BrokerUnavailable(f"the embedded broker file {self.path} is closed")
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as exc:
            raise BrokerUnavailable(
                f"reading the embedded broker file {self.path} failed: {exc}"
            ) from exc

    # Topology

    def load_topology(self) -> None:
        self.topology = _Topology(
            self.query("SELECT name, kind, hash_header FROM exchanges"),
            self.query(
                "SELECT exchange, destination, to_exchange, pattern FROM bindings ORDER BY id"
            ),
            self.query("SELECT name FROM queues"),
        )

    def declare_exchange(self, name: str, kind: str, hash_header: str | None = None) -> None:
        existing = self.topology.exchanges.get(name)
        if existing is not None:
            if existing.kind != kind:
                raise ConfigurationError(
                    f"exchange {name!r} exists in {self.path} as {existing.kind}, "
                    f"not {kind}; delete the broker file or use another namespace"
                )
            return
        with self.transaction() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO exchanges (name, kind, hash_header) VALUES (?, ?, ?)",
                (name, kind, hash_header),
            )
        self.load_topology()

    def delete_exchange(self, name: str) -> None:
        """Delete an exchange with the bindings from and to it; a missing one is no error."""
        if name not in self.topology.exchanges:
            return
        with self.transaction() as connection:
            connection.execute("DELETE FROM exchanges WHERE name = ?", (name,))
            connection.execute(
                "DELETE FROM bindings WHERE exchange = ? OR (destination = ? AND to_exchange = 1)",
                (name, name),
            )
        self.load_topology()

    def declare_queue(self, name: str) -> None:
        if name in self.topology.queues:
            return
        with self.transaction() as connection:
            connection.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (name,))
        self.load_topology()

    def bind(self, exchange: str, destination: str, pattern: str, *, to_exchange: bool) -> None:
        if exchange not in self.topology.exchanges:
            raise ConfigurationError(
                f"exchange {exchange!r} is not declared in {self.path}; "
                "call EmbeddedBroker.connect before declaring queues"
            )
        if self.topology.has_binding(exchange, _Binding(destination, to_exchange, pattern)):
            return
        with self.transaction() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO bindings (exchange, destination, to_exchange, pattern) "
                "VALUES (?, ?, ?, ?)",
                (exchange, destination, int(to_exchange), pattern),
            )
        self.load_topology()

    def has_queue(self, name: str) -> bool:
        return name in self.topology.queues

    def delete_queue(self, name: str) -> None:
        """Cancel a queue's consumers, then delete it with its bindings and messages."""
        state = self._states.get(name)
        if state is not None:
            for consumer in list(state.consumers):
                self.cancel(consumer.tag)
        with self.transaction() as connection:
            connection.execute("DELETE FROM messages WHERE queue = ?", (name,))
            connection.execute(
                "DELETE FROM bindings WHERE destination = ? AND to_exchange = 0", (name,)
            )
            connection.execute("DELETE FROM queues WHERE name = ?", (name,))
        if state is not None:
            state.forget()
        self.load_topology()

    # Publishing

    def publish(self, exchange: str, messages: Sequence[StoredMessage]) -> list[StoredMessage]:
        """Insert a copy of each message into every queue it reaches, in one transaction.

        Returns the messages no queue was bound to, which are dropped.
        """
        rows: list[tuple[Any, ...]] = []
        unroutable: list[StoredMessage] = []
        touched: set[str] = set()
        for message in messages:
            queues = self.topology.route(exchange, message.routing_key, message.headers)
            if not queues:
                unroutable.append(message)
                continue
            headers = orjson.dumps(message.headers) if message.headers else None
            for queue in queues:
                touched.add(queue)
                rows.append(
                    (
                        queue,
                        message.routing_key,
                        message.message_id,
                        message.type,
                        message.content_type,
                        headers,
                        message.body,
                    )
                )
        if rows:
            with self.transaction() as connection:
                connection.executemany(
                    "INSERT INTO messages (queue, routing_key, message_id, type, "
                    "content_type, headers, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        for queue in touched:
            self._wake(queue)
        return unroutable

    def dead_letter(
        self, message: EmbeddedMessage, exchange: str, headers: dict[str, Any]
    ) -> list[str]:
        """Copy a delivered message through `exchange` with `headers` and ack the original
        in one transaction. Returns the queues the copy reached."""
        consumer = message._consumer
        if consumer.hub is not self:
            raise ValueError(
                f"message {message.message_id} was delivered from {consumer.hub.path}, "
                f"not from {self.path}"
            )
        self._require_outstanding(consumer, message.delivery_tag)

        stored = message.stored
        queues = self.topology.route(exchange, stored.routing_key, headers)
        encoded = orjson.dumps(headers)
        with self.transaction() as connection:
            connection.executemany(
                "INSERT INTO messages (queue, routing_key, message_id, type, "
                "content_type, headers, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        queue,
                        stored.routing_key,
                        stored.message_id,
                        stored.type,
                        stored.content_type,
                        encoded,
                        stored.body,
                    )
                    for queue in queues
                ],
            )
            connection.execute("DELETE FROM messages WHERE id = ?", (stored.id,))

        del consumer.outstanding[message.delivery_tag]
        for queue in (*queues, consumer.queue.name):
            self._wake(queue)
        return queues

    def move(self, message: StoredMessage, queue: str, headers: dict[str, Any]) -> bool:
        """Move a stored message to the tail of `queue` with new headers, in one transaction.

        Returns False, changing nothing, when `queue` is not declared or the message is no
        longer stored.
        """
        if not self.has_queue(queue):
            return False
        with self.transaction() as connection:
            deleted = connection.execute("DELETE FROM messages WHERE id = ?", (message.id,))
            if deleted.rowcount != 1:
                return False
            connection.execute(
                "INSERT INTO messages (queue, routing_key, message_id, type, "
                "content_type, headers, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    queue,
                    message.routing_key,
                    message.message_id,
                    message.type,
                    message.content_type,
                    orjson.dumps(headers) if headers else None,
                    message.body,
                ),
            )
        self._wake(queue)
        return True

    def peek(self, queue: str, limit: int) -> list[StoredMessage]:
        """Return up to `limit` stored messages of `queue`, oldest first, delivered or not."""
        rows = self.query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE queue = ? ORDER BY id LIMIT ?",
            (queue, limit),
        )
        return [StoredMessage.from_row(row) for row in rows]

    def depth(self, queue: str) -> int:
        """Count the messages of `queue` ready for delivery: stored minus unacked ones."""
        ((stored,),) = self.query("SELECT count(*) FROM messages WHERE queue = ?", (queue,))
        state = self._states.get(queue)
        unacked = sum(len(c.outstanding) for c in state.consumers) if state else 0
        return int(stored) - unacked

    # Consumers

    def consume(self, queue: str, callback: DeliveryCallback, *, prefetch: int) -> str:
        if not self.has_queue(queue):
            raise QueueNotFound(queue, self.path)
        state = self._states.get(queue)
        if state is None:
            state = self._states[queue] = _QueueState(queue)
        if state.dispatcher is None:
            state.dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(state), name=f"embedded broker queue {queue}"
            )
        tag = f"ctag.{next(self._consumer_ids)}"
        consumer = _Consumer(self, tag, state, callback, prefetch)
        state.consumers.append(consumer)
        self._consumers[tag] = consumer
        state.wakeup.set()
        return tag

    def cancel(self, tag: str) -> None:
        """Detach a consumer and return its unacked messages to the head of the queue."""
        consumer = self._consumers.pop(tag, None)
        if consumer is None:
            return
        consumer.cancelled = True
        state = consumer.queue
        state.consumers.remove(consumer)
        for message in consumer.outstanding.values():
            state.requeue(message.stored.id)
        consumer.outstanding.clear()
        state.wakeup.set()

    def settle(
        self, consumer: _Consumer, delivery_tag: int, multiple: bool, *, requeue: bool
    ) -> None:
        """Ack (delete), requeue or drop one delivery, or with `multiple` every unacked
        delivery of `consumer` up to `delivery_tag`."""
        self._require_outstanding(consumer, delivery_tag)
        if multiple:
            tags = list(itertools.takewhile(lambda t: t <= delivery_tag, consumer.outstanding))
        else:
            tags = [delivery_tag]
        ids = [consumer.outstanding[tag].stored.id for tag in tags]
        if requeue:
            for row_id in ids:
                consumer.queue.requeue(row_id)
        else:
            with self.transaction() as connection:
                connection.executemany(
                    "DELETE FROM messages WHERE id = ?", [(row_id,) for row_id in ids]
                )
        for tag in tags:
            del consumer.outstanding[tag]
        consumer.queue.wakeup.set()

    def _require_outstanding(self, consumer: _Consumer, delivery_tag: int) -> None:
        if consumer.cancelled or delivery_tag not in consumer.outstanding:
            raise DeliveryNotOutstanding(
                f"delivery {delivery_tag} on queue {consumer.queue.name!r} is already settled, "
                "or its consumer was cancelled and the message returned to the queue"
            )

    def _wake(self, queue: str) -> None:
        state = self._states.get(queue)
        if state is not None:
            state.wakeup.set()

    async def _dispatch(self, state: _QueueState) -> None:
        failures = 0
        while True:
            await state.wakeup.wait()
            state.wakeup.clear()
            try:
                await self._deliver_available(state)
                failures = 0
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.1 * 2**failures)
                log = logger.warning if isinstance(exc, BrokerUnavailable) else logger.error
                log(
                    "embedded broker delivery failed, retrying: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"queue": state.name, "attempt": failures, "delay_seconds": delay},
                )
                await asyncio.sleep(delay)
                state.wakeup.set()

    async def _deliver_available(self, state: _QueueState) -> None:
        while state.consumers:
            consumer = state.consumers[0]
            room = min(consumer.room(), _PAGE_SIZE)
            if room <= 0:
                return
            rows = self._next_rows(state, room)
            if not rows:
                return
            for position, (stored, redelivered) in enumerate(rows):
                if consumer.cancelled:
                    for later, _ in rows[position:]:
                        state.requeue(later.id)
                    break
                await self._deliver(consumer, stored, redelivered)
            # Let other tasks run between pages of a long backlog.
            await asyncio.sleep(0)

    async def _deliver(self, consumer: _Consumer, stored: StoredMessage, redelivered: bool) -> None:
        consumer.last_tag += 1
        message = EmbeddedMessage(stored, consumer, consumer.last_tag, redelivered)
        consumer.outstanding[message.delivery_tag] = message
        try:
            await consumer.callback(message)
        except Exception:
            # The message stays unacked, as with aio-pika, until the consumer settles it
            # or is cancelled.
            logger.exception(
                "consumer callback failed",
                extra={"queue": stored.queue, "message_id": stored.message_id},
            )

    def _next_rows(self, state: _QueueState, limit: int) -> list[tuple[StoredMessage, bool]]:
        """Take up to `limit` rows to deliver: requeued rows first, then unread ones."""
        if state.requeued:
            count = min(limit, len(state.requeued))
            ids = heapq.nsmallest(count, state.requeued)
            placeholders = ",".join("?" * len(ids))
            rows = self.query(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id IN ({placeholders}) ORDER BY id",
                ids,
            )
            # Removed only after the query succeeded, so a failed read loses no row.
            for _ in range(count):
                heapq.heappop(state.requeued)
            if rows:
                return [(StoredMessage.from_row(row), True) for row in rows]
        rows = self.query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE queue = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (state.name, state.cursor, limit),
        )
        if rows:
            state.cursor = rows[-1][0]
        return [(StoredMessage.from_row(row), False) for row in rows]

    def _read_data_version(self) -> int:
        ((version,),) = self._connection.execute("PRAGMA data_version").fetchall()
        return int(version)

    async def _watch_foreign_writes(self) -> None:
        """Wake every queue after another process committed to the file, such as
        `lojasync dead-letters republish` moving messages back to a queue."""
        while True:
            await asyncio.sleep(_FOREIGN_WRITE_POLL_SECONDS)
            try:
                version = self._read_data_version()
                if version != self._data_version:
                    self._data_version = version
                    self.load_topology()
                    for state in self._states.values():
                        state.wakeup.set()
            except (sqlite3.Error, BrokerUnavailable) as exc:
                logger.warning(
                    "checking the embedded broker file for changes failed: %s",
                    exc,
                    extra={"path": str(self.path)},
                )


# Hubs of this process by absolute file path. Each one lives while a broker references it.
_hubs: dict[Path, Hub] = {}


def acquire_hub(path: Path, *, create: bool) -> Hub:
    """Return this process's hub for `path`, opening the file if no broker has it open."""
    hub = _hubs.get(path)
    if hub is None:
        if not create and not path.exists():
            raise FileNotFoundError(f"embedded broker file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        hub = _hubs[path] = Hub.open(path)
    hub.references += 1
    return hub


async def release_hub(hub: Hub) -> None:
    """Drop one reference to `hub`. Dropping the last one closes its SQLite connection."""
    hub.references -= 1
    if hub.references > 0:
        return
    if _hubs.get(hub.path) is hub:
        del _hubs[hub.path]
    await hub.close()


class EmbeddedQueue:
    """A declared queue of an embedded broker, consumable like an aio-pika queue."""

    def __init__(self, broker: EmbeddedBroker, name: str, prefetch: int | None = None) -> None:
        self._broker = broker
        self.name = name
        # Unacked deliveries to this queue's consumer; None takes the broker's prefetch.
        self.prefetch = prefetch

    async def consume(self, callback: DeliveryCallback, no_ack: bool = False) -> str:
        """Start delivering to `callback` and return the consumer tag for `cancel`.

        Every delivery must be settled with ack, nack or reject: `no_ack=True` is not
        supported.
        """
        if no_ack:
            raise ValueError("EmbeddedQueue.consume supports only no_ack=False")
        tag = self._broker._require_hub().consume(
            self.name, callback, prefetch=self.prefetch or self._broker.prefetch
        )
        self._broker._consumer_tags.add(tag)
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        hub = self._broker._hub
        self._broker._consumer_tags.discard(consumer_tag)
        if hub is not None:
            hub.cancel(consumer_tag)


class EmbeddedBroker(NamespaceNames):
    """The `Broker` interface on a SQLite file shared by the services of one process."""

    def __init__(
        self, url: str, namespace: str, *, prefetch: int = 1000, partitions: int = 4
    ) -> None:
        self.url = url
        self.path = path_from_url(url)
        self.namespace = namespace
        self.prefetch = prefetch
        self.partitions = partitions
        self._hub: Hub | None = None
        self._consumers: list[BatchConsumer] = []
        self._consumer_tags: set[str] = set()
        self._declared_stores: set[str] = set()

    @property
    def connected(self) -> bool:
        return self._hub is not None and not self._hub.closed

    async def connect(self, *, attempts: int = 30, delay: float = 1.0) -> None:
        """Open the broker file (creating it and its directory), then declare the topology.

        Retries while the file cannot be opened, for example while another process holds
        a lock on it.
        """
        for attempt in range(1, attempts + 1):
            try:
                if self._hub is None:
                    self._hub = acquire_hub(self.path, create=True)
                self._declare_topology()
                return
            except (sqlite3.Error, OSError, BrokerUnavailable) as exc:
                if attempt == attempts:
                    raise BrokerUnavailable(
                        f"cannot open the embedded broker file {self.path} (LOJASYNC_BROKER_URL) "
                        f"after {attempts} attempts: {exc}; check that its directory is "
                        "writable and that no other program locks it"
                    ) from exc
                logger.warning(
                    "embedded broker file not ready, retrying",
                    extra={"attempt": attempt, "attempts": attempts, "error": str(exc)},
                )
                await asyncio.sleep(delay)

    def _declare_topology(self) -> None:
        hub = self._require_hub()
        hub.declare_exchange(self.exchange_name, TOPIC)
        hub.declare_exchange(self.dead_letter_exchange_name, FANOUT)
        hub.declare_queue(self.dead_letter_queue_name)
        hub.bind(self.dead_letter_exchange_name, self.dead_letter_queue_name, "", to_exchange=False)
        hub.declare_exchange(self.partitions_exchange_name, HEADERS, PARTITION_HEADER)
        for pattern in ORCHESTRATOR_INPUT_BINDINGS:
            hub.bind(self.exchange_name, self.partitions_exchange_name, pattern, to_exchange=True)
        # Files of earlier versions route changes through a consistent-hash exchange, which
        # would deliver every change a second time.
        hub.delete_exchange(self.legacy_changes_exchange_name)
        for index in range(self.partitions):
            partition = self.queue_name(orchestrator_partition(index))
            hub.declare_queue(partition)
            hub.bind(self.partitions_exchange_name, partition, str(index), to_exchange=False)
            if index == 0:
                hub.bind(self.partitions_exchange_name, partition, "", to_exchange=False)
        self._declare(ERP_GATEWAY_QUEUE.consumer, ERP_GATEWAY_QUEUE.bindings)

    async def ensure_store_queue(self, store_id: str) -> None:
        """Declare a store's queue once per broker, before anything is routed to it."""
        if store_id in self._declared_stores:
            return
        spec = store_queue(store_id)
        await self.declare_queue(spec.consumer, spec.bindings)
        self._declared_stores.add(store_id)

    async def declare_queue(self, consumer: str, bindings: Sequence[str]) -> EmbeddedQueue:
        """Declare a durable queue for `consumer` bound to the exchange with `bindings`."""
        return self._declare(consumer, bindings)

    def _declare(self, consumer: str, bindings: Sequence[str]) -> EmbeddedQueue:
        hub = self._require_hub()
        name = self.queue_name(consumer)
        hub.declare_queue(name)
        for pattern in bindings:
            hub.bind(self.exchange_name, name, pattern, to_exchange=False)
        return EmbeddedQueue(self, name)

    async def delete_queue(self, consumer: str) -> None:
        """Delete `consumer`'s queue with its bindings and messages."""
        self._require_hub().delete_queue(self.queue_name(consumer))

    async def queue_depth(self, consumer: str) -> int:
        """Count the messages in `consumer`'s queue ready for delivery, not the unacked ones."""
        hub = self._require_hub()
        name = self.queue_name(consumer)
        if not hub.has_queue(name):
            raise QueueNotFound(name, self.path)
        return hub.depth(name)

    async def publish(self, events: Sequence[OutgoingEvent]) -> None:
        """Store the messages in order in one transaction, so they are durable on return."""
        hub = self._require_hub()
        messages = [
            StoredMessage(
                id=0,
                queue="",
                routing_key=event.routing_key,
                message_id=event.event_id,
                type=event.event_type,
                content_type=event.content_type,
                headers=partition_header(event.partition_key, self.partitions)
                if event.partition_key
                else {},
                body=event.body,
            )
            for event in events
        ]
        for message in hub.publish(self.exchange_name, messages):
            logger.warning(
                "message unroutable: no queue is bound to its routing key, so the broker "
                "dropped it",
                extra={"message_id": message.message_id, "routing_key": message.routing_key},
            )

    async def dead_letter(self, message: EmbeddedMessage, queue: str, reason: str) -> None:
        """Copy a message to the dead-letter queue with the reason, then ack the original."""
        if not isinstance(message, EmbeddedMessage):
            raise TypeError(
                f"EmbeddedBroker.dead_letter takes an EmbeddedMessage, not {type(message)}"
            )
        headers = dead_letter_headers(message.headers, queue, reason)
        reached = self._require_hub().dead_letter(message, self.dead_letter_exchange_name, headers)
        if not reached:
            logger.warning(
                "no queue is bound to the dead-letter exchange, so the message was dropped",
                extra={"message_id": message.message_id, "queue": queue},
            )
        log_dead_lettered(message.message_id, message.routing_key, queue, reason)

    async def dead_letter_event(
        self,
        message: EmbeddedMessage,
        body: bytes,
        *,
        event_id: str | None,
        event_type: str | None,
        queue: str,
        reason: str,
    ) -> None:
        """Copy one event of a pack to the dead-letter queue with the reason; the pack
        itself is not acked here."""
        copy = StoredMessage(
            id=0,
            queue="",
            routing_key=message.routing_key,
            message_id=event_id,
            type=event_type,
            content_type=CONTENT_TYPE,
            headers=dead_letter_headers(message.headers, queue, reason),
            body=body,
        )
        if self._require_hub().publish(self.dead_letter_exchange_name, [copy]):
            logger.warning(
                "no queue is bound to the dead-letter exchange, so the event was dropped",
                extra={"message_id": event_id, "queue": queue},
            )
        log_dead_lettered(event_id, message.routing_key, queue, reason)

    async def consume(
        self,
        consumer: str,
        bindings: Sequence[str],
        handler: BatchHandler,
        *,
        batch_max: int = 500,
        batch_linger: float = 0.0,
        max_attempts: int = 12,
        health_check: HealthCheck | None = None,
        prefetch: int | None = None,
    ) -> BatchConsumer:
        """Consume `consumer`'s queue in batches. Without `bindings` the queue must exist.

        `prefetch` overrides the broker's prefetch for this consumer.
        """
        hub = self._require_hub()
        if bindings:
            queue = self._declare(consumer, bindings)
        else:
            name = self.queue_name(consumer)
            if not hub.has_queue(name):
                raise QueueNotFound(name, self.path)
            queue = EmbeddedQueue(self, name)
        queue.prefetch = prefetch
        # BatchConsumer is typed for aio-pika, but it only calls the members that
        # EmbeddedBroker, EmbeddedQueue and EmbeddedMessage provide with the same meaning.
        batch_consumer = BatchConsumer(
            cast(Broker, self),
            cast(AbstractQueue, queue),
            handler,
            batch_max=batch_max,
            batch_linger=batch_linger,
            max_attempts=max_attempts,
            health_check=health_check,
        )
        await batch_consumer.start()
        self._consumers.append(batch_consumer)
        return batch_consumer

    async def close(self, *, timeout: float = 5.0) -> None:
        """Stop this broker's consumers, returning their unacked messages to the queues.

        The file stays open while another broker of this process uses it.
        """
        for consumer in self._consumers:
            await consumer.stop(timeout=timeout)
        self._consumers.clear()
        hub = self._hub
        if hub is None:
            return
        for tag in list(self._consumer_tags):
            hub.cancel(tag)
        self._consumer_tags.clear()
        self._hub = None
        await release_hub(hub)

    def _require_hub(self) -> Hub:
        if self._hub is None or self._hub.closed:
            raise BrokerUnavailable(
                "the embedded broker is not connected; call EmbeddedBroker.connect first"
            )
        return self._hub
