"""The checkout-event contract, version 1 (see docs/events.md).

This module holds the typed event. The decoder that turns Kafka bytes into a
:class:`CheckoutEvent` or a precise rejection reason lives here too.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024


class CheckoutEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One validated checkout event. ``ts`` is normalised to epoch seconds (UTC)."""

    event_id: str
    customer_id: str
    ts: float
    amount: float
    type: Literal["purchase", "refund"] = "purchase"
    discount: float = 0.0
    items: int = 1
    category: str | None = None
    channel: str | None = None
    currency: str | None = None
    schema_version: int = SCHEMA_VERSION
    age: float | None = None
    gender: str | None = None
    annual_income: float | None = None
