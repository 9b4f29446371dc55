"""Per-customer state and its pure update rules: the one definition of every feature.

Money is kept in integer cents so that sums are exact in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HALF_LIFE_DAYS = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerState:
    """Exact running values for one customer (contract v1, see docs/features.md)."""

    orders: int = 0
    refunds: int = 0
    gross_cents: int = 0
    refunded_cents: int = 0
    discount_cents: int = 0
    items: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    spend_decayed: float = 0.0
    orders_decayed: float = 0.0
    decay_ts: float | None = None
    age: float | None = None
    gender: str | None = None
    annual_income: float | None = None
    profile_ts: float | None = None
