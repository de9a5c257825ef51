"""Event ids: random (UUID version 4) and derived (UUID version 5), as canonical strings.

The results equal `str(uuid.uuid4())` and `str(uuid.uuid5(uuid.UUID(parent), name))`.
They are built from the bytes directly, without `uuid.UUID` objects, because the
services make several ids per change and the objects cost more than the hashing.
"""

from __future__ import annotations

import hashlib
import os
import threading

# Random bytes are read from the operating system 4 KiB at a time, because a system call
# for each id cost more than the rest of building it. The gateway builds ids in worker
# threads, so the lock keeps two threads from reading the same offset and the same bytes.
_RANDOM_BLOCK = 4096
_random = b""
_offset = _RANDOM_BLOCK
_lock = threading.Lock()


def _forget_random() -> None:
    # A forked child must not hand out the ids its parent has still to hand out. It gets a
    # new lock because another thread of the parent may have held the old one at the fork.
    global _random, _offset, _lock
    _random, _offset, _lock = b"", _RANDOM_BLOCK, threading.Lock()


os.register_at_fork(after_in_child=_forget_random)


def new_id() -> str:
    """Return a random UUID (version 4) in its canonical text form."""
    global _random, _offset
    with _lock:
        if _offset >= len(_random):
            _random, _offset = os.urandom(_RANDOM_BLOCK), 0
        raw = bytearray(_random[_offset : _offset + 16])
        _offset += 16
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return _canonical(raw.hex())


def derived_id(parent: str, name: str) -> str:
    """Return the UUID version 5 of `name` in the namespace of the UUID `parent`.

    The same parent and name always give the same id, so an event re-sent for one
    decision keeps its id. Raises ValueError when `parent` is not a UUID.
    """
    try:
        namespace = bytes.fromhex(parent.replace("-", "").removeprefix("urn:uuid:").strip("{}"))
    except ValueError:
        namespace = b""
    if len(namespace) != 16:
        raise ValueError(f"{parent!r} is not a UUID")
    raw = bytearray(hashlib.sha1(namespace + name.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    return _canonical(raw.hex())


def _canonical(hex_digits: str) -> str:
    return (
        f"{hex_digits[:8]}-{hex_digits[8:12]}-{hex_digits[12:16]}"
        f"-{hex_digits[16:20]}-{hex_digits[20:]}"
    )
