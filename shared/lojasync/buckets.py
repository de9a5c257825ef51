"""Per-bucket digests for drift detection, computed inside PostgreSQL on both sides.

Each record falls in bucket `hashtextextended(record_key, 0) mod N`, so it lands in the
same bucket in the orchestrator's database and in a store's. A bucket's digest is the
number of records and the sum of `hashtextextended(record_key || ':' || content_hash, 0)`
over them: the sum does not depend on row order, so no database sorts anything, and a
record whose key or content differs changes the sum of its bucket. The hash is 64 bits
and not cryptographic: it detects accidental drift, not a forged row.

Both databases must be PostgreSQL 11 or newer (where `hashtextextended` exists); the
orchestrator and the stores are compared with the same function of the same server
family, so the values agree. Only buckets whose digests differ are drilled into.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bucket count limits: a bucket should hold a few hundred records, so that a difference
# costs a few hundred rows of transfer, and the bucket list stays small.
MIN_BUCKETS = 64
MAX_BUCKETS = 8192
RECORDS_PER_BUCKET = 128


def bucket_count_for(records: int) -> int:
    """Return a power of two near `records / RECORDS_PER_BUCKET`, within the limits."""
    wanted = max(1, records // RECORDS_PER_BUCKET)
    count = MIN_BUCKETS
    while count < wanted and count < MAX_BUCKETS:
        count *= 2
    return count


def bucket_sql(bucket_count_parameter: str = "bucket_count") -> str:
    """SQL of a row's bucket; `mod` of a negative hash is negative, hence the second mod."""
    parameter = f":{bucket_count_parameter}"
    return f"mod(mod(hashtextextended(record_key, 0), {parameter}) + {parameter}, {parameter})"


ROW_VALUE_SQL = "hashtextextended(record_key || ':' || content_hash, 0)"


@dataclass(frozen=True)
class BucketDigest:
    """Records in one bucket and the sum of their row hashes (a decimal string)."""

    count: int
    total: str

    def as_list(self) -> list[object]:
        return [self.count, self.total]


def bucket_query(source: str) -> str:
    """Build the per-entity, per-bucket digest query over `source`.

    `source` is a FROM item with the columns entity, record_key and content_hash and only
    the rows to compare; the query takes the parameter `bucket_count`.
    """
    return (
        "SELECT entity, bucket, count(*) AS records, sum(value)::text AS total FROM ("
        f" SELECT entity, {bucket_sql()} AS bucket, {ROW_VALUE_SQL} AS value FROM {source}"
        ") AS hashed GROUP BY entity, bucket"
    )


def bucket_rows_query(source: str) -> str:
    """Build the query of the rows of one entity in chosen buckets, over `source`.

    `source` has the columns entity, record_key, content_hash and revision; the query
    takes the parameters `entity`, `bucket_count` and `buckets` (an integer array).
    """
    return (
        "SELECT record_key, content_hash, revision FROM ("
        f" SELECT record_key, content_hash, revision, {bucket_sql()} AS bucket"
        f" FROM {source} WHERE entity = :entity"
        ") AS hashed WHERE bucket = ANY(CAST(:buckets AS INTEGER[]))"
    )
