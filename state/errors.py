"""Typed errors of segstream, all under one root."""

from __future__ import annotations


class SegstreamError(Exception):
    """Root of every error segstream raises on purpose."""


class ConfigError(SegstreamError):
    """Configuration is missing or contradictory."""


class InvalidCustomerId(SegstreamError, ValueError):
    """A customer id that may not become a Redis key."""


class InvalidEvent(SegstreamError, ValueError):
    """An event that breaks the checkout-event contract (``reason`` says how)."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


class UnknownSchemaVersion(SegstreamError):
    """A stored model or record uses a schema version this code does not know."""


class UnknownCustomer(SegstreamError, KeyError):
    """No segment is stored for this customer."""


class DevStackError(SegstreamError):
    """A local development server could not be started or stopped."""
