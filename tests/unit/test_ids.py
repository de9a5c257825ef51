"""Event ids: time-ordered UUIDs (version 7) and ids derived from them (versions 8 and 5)."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

import pytest

from lojasync.ids import derived_id, new_id


def _milliseconds(text: str) -> int:
    return int(text.replace("-", "")[:12], 16)


def test_new_id_is_version_7_at_current_time() -> None:
    before = time.time_ns() // 1_000_000
    texts = [new_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    for text in texts:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= _milliseconds(text) <= after


def test_new_ids_sort_by_millisecond() -> None:
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    assert first < second


def test_new_ids_do_not_repeat_across_random_blocks() -> None:
    # 20,000 ids use about 49 blocks of random bytes, most of them within one millisecond
    # of another id, where only the random bits tell them apart.
    ids = {new_id() for _ in range(20_000)}
    assert len(ids) == 20_000


@pytest.mark.parametrize("name", ["all", "store.loja-1", "erp", "loja-2/17", "ção"])
def test_derived_id_of_version_4_parent_is_uuid5(name: str) -> None:
    # An id made before ids were version 7 derives the same ids as it did then.
    parent = str(uuid.uuid4())
    assert derived_id(parent, name) == str(uuid.uuid5(uuid.UUID(parent), name))
    assert derived_id(parent, name) == derived_id(parent, name)


@pytest.mark.parametrize("name", ["all", "store.loja-1", "erp", "loja-2/17", "ção"])
def test_derived_id_of_version_7_parent_keeps_time(name: str) -> None:
    parent = new_id()
    derived = derived_id(parent, name)
    parsed = uuid.UUID(derived)
    assert str(parsed) == derived
    assert parsed.version == 8
    assert parsed.variant == uuid.RFC_4122
    assert _milliseconds(derived) == _milliseconds(parent)
    assert derived == derived_id(parent, name)
    # Apart from the version and variant bits, the rest is the name's SHA-1 in the
    # parent's namespace, as in version 5.
    version_5 = uuid.uuid5(uuid.UUID(parent), name).int
    hash_bits = (1 << 80) - 1 & ~(0xF << 76) & ~(0x3 << 62)
    assert parsed.int & hash_bits == version_5 & hash_bits


def test_derived_ids_differ_by_name() -> None:
    parent = new_id()
    names = ["all", *(f"loja-{n}/{sequence}" for n in range(1, 51) for sequence in range(20))]
    assert len({derived_id(parent, name) for name in names}) == len(names)


def test_derived_id_rejects_non_uuid_parent() -> None:
    with pytest.raises(ValueError, match="not a UUID"):
        derived_id("abc", "all")


def test_forked_child_draws_other_ids_than_its_parent() -> None:
    new_id()  # the parent now has unused random bytes in its buffer
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(writer, new_id().encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    child_id = os.read(reader, 64).decode()
    os.close(reader)
    assert uuid.UUID(child_id).version == 7
    assert child_id != new_id()


def test_concurrent_threads_get_distinct_ids() -> None:
    # A thread switch between reading the buffer offset and advancing it would hand the
    # same bytes to two threads. A switch interval of a microsecond makes switches frequent.
    threads, per_thread = 8, 5000
    drawn: list[list[str]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def draw(out: list[str]) -> None:
        start.wait()
        out.extend(new_id() for _ in range(per_thread))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=draw, args=(out,)) for out in drawn]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    ids = [one for out in drawn for one in out]
    assert len(ids) == threads * per_thread
    assert len(set(ids)) == len(ids)
