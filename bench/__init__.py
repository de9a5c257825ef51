"""Benchmark harness for lojasync: `python -m bench` (or `make bench`).

Runs the real services as child processes against the RabbitMQ and PostgreSQL servers.
It measures end-to-end throughput to three stores and propagation latency at a fixed
offered load. It compares the throughput with two floors: direct writes into the store
databases, and RabbitMQ alone. It also reads the peak memory of every service and of a
store registry that drains a large backlog.
BENCHMARKS.md at the repository root explains each figure and records results.
"""
