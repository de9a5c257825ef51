"""Content hashes and per-entity digests, computed the same way on every side.

A record's content hash is the MD5 of its canonical JSON (keys sorted, no spaces) and
covers only the fields that leave the store, so store-local fields never cause drift.
An entity's digest is the MD5 of the lines `<record key>:<content hash>` joined by a
newline in byte order of the keys; PostgreSQL computes it with `ENTITY_DIGEST_SQL` over
the stored hashes, so no record leaves the database to be compared. MD5 serves here as
a fast checksum, not as a defence against tampering.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import orjson

EMPTY_DIGEST = hashlib.md5(b"", usedforsecurity=False).hexdigest()


def canonical_json(data: Mapping[str, object]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def content_hash(data: Mapping[str, object]) -> str:
    return hashlib.md5(canonical_json(data), usedforsecurity=False).hexdigest()


def entity_digest(rows: Iterable[tuple[str, str]]) -> str:
    """Digest of (record key, content hash) pairs, in the same form as ENTITY_DIGEST_SQL."""
    ordered = sorted(rows, key=lambda row: row[0].encode())
    joined = "\n".join(f"{key}:{hash_}" for key, hash_ in ordered)
    return hashlib.md5(joined.encode(), usedforsecurity=False).hexdigest()


# Aggregate over a table with columns record_key and content_hash; COLLATE "C" sorts by
# bytes, as entity_digest does, whatever the database's locale.
ENTITY_DIGEST_SQL = (
    "coalesce(md5(string_agg(record_key || ':' || content_hash, E'\\n' "
    "ORDER BY record_key COLLATE \"C\")), md5(''))"
)
