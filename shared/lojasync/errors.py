"""Exceptions raised by the lojasync library.

LojasyncError
├── ConfigurationError      a setting is missing or invalid
├── UnknownEntity           an entity name not in the catalog
├── RecordInvalid           a record failed validation (catalog)
├── PolicyViolation         the ownership policy rejects a change
├── EnvelopeInvalid         a message is not a valid lojasync CloudEvent
└── TransientError          a dependency failed; retrying may succeed
    ├── BrokerUnavailable
    └── DatabaseUnavailable
"""

from __future__ import annotations


class LojasyncError(Exception):
    """Root of every error lojasync raises."""


class ConfigurationError(LojasyncError):
    """A setting is missing or has an invalid value."""


class EnvelopeInvalid(LojasyncError):
    """A message body is not a valid lojasync CloudEvent; retrying cannot fix it."""


class TransientError(LojasyncError):
    """A dependency failed in a way that a later attempt may not."""


class BrokerUnavailable(TransientError):
    """The message broker refused or dropped the connection."""


class DatabaseUnavailable(TransientError):
    """The database refused or dropped the connection."""
