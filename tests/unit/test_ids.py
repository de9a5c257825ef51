"""Event ids: the canonical forms of UUID versions 4 and 5."""

from __future__ import annotations

import os
import sys
import threading
import uuid

import pytest

from lojasync.ids import derived_id, new_id


def test_new_id_is_a_canonical_version_4_uuid() -> None:
    for _ in range(1000):
        text = new_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_new_ids_do_not_repeat_across_random_blocks() -> None:
    # 20,000 ids use about 78 blocks of random bytes.
    ids = {new_id() for _ in range(20_000)}
    assert len(ids) == 20_000


@pytest.mark.parametrize("name", ["all", "store.loja-1", "erp", "loja-2/17", "ção"])
def test_derived_id_equals_uuid5(name: str) -> None:
    parent = str(uuid.uuid4())
    assert derived_id(parent, name) == str(uuid.uuid5(uuid.UUID(parent), name))
    assert derived_id(parent, name) == derived_id(parent, name)


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
    assert uuid.UUID(child_id).version == 4
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
