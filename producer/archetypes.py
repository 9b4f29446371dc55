"""Customer archetypes of the simulator: who buys how often, how much, and when.

Each archetype is a small frozen record of distribution parameters. The six of
them match the segments segstream promises, and they are built to be told apart
by the features the offline job computes (recency, order rate, average order
value, discount share, tenure):

=====================  ==========  =====  ========  ==============================
archetype              orders/yr   AOV    discount  shape of the history
=====================  ==========  =====  ========  ==============================
High-Spenders          18          260    low       whole window, recent
Discount Seekers       22          32     high      buys mostly on promotion days
Infrequent Shoppers    3           30     low       whole window, often long quiet
Loyal Customers        70          50     low       whole window, recent
New Customers          30          55     low       joined in the last few weeks
At-Risk                28 -> 0.25  130    low       went quiet months ago
=====================  ==========  =====  ========  ==============================

>>> [a.name for a in ARCHETYPES][:2]
['High-Spenders', 'Discount Seekers']
>>> round(sum(a.weight for a in ARCHETYPES), 6)
1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CATEGORIES: tuple[str, ...] = (
    "electronics",
    "fashion",
    "grocery",
    "home",
    "beauty",
    "sports",
    "books",
    "toys",
)
CHANNELS: tuple[str, ...] = ("web", "app", "store")
GENDERS: tuple[str, ...] = ("F", "M")


@dataclass(frozen=True, kw_only=True, slots=True)
class Archetype:
    """Distribution parameters of one kind of customer.

    Rates are orders per year; ``regularity`` is the gamma shape of the gaps between
    orders (1: Poisson arrivals, 4: fairly regular). Order value is log-normal around
    ``median_order_value``; each customer draws a personal median from
    ``customer_spread``. ``promo_share`` is the share of orders placed on
    promotion days; ``discount_on_promo`` / ``discount_off_promo`` are the chances
    that an order uses a discount there; ``discount_depth`` is the mean fraction
    of the list price saved. Tenure and quiet periods are given as fractions of
    the history window so that short windows keep the same shape.
    """

    name: str
    weight: float
    orders_per_year: float
    median_order_value: float
    regularity: float = 1.0
    order_value_sigma: float = 0.35
    customer_spread: float = 0.15
    promo_share: float = 0.14
    discount_on_promo: float = 0.25
    discount_off_promo: float = 0.03
    discount_depth: float = 0.15
    refund_rate: float = 0.02
    items_mean: float = 1.5
    category_alpha: tuple[float, ...] = (1.0,) * len(CATEGORIES)
    channel_p: tuple[float, ...] = (0.5, 0.3, 0.2)
    age_mean: float = 40.0
    age_sd: float = 12.0
    # Window of the first purchase, as fractions of the history window back from its end.
    joined_between: tuple[float, float] = (0.75, 1.0)
    # For customers drifting away: quiet since this fraction of the window before its end.
    quiet_since: tuple[float, float] | None = None
    quiet_orders_per_year: float = 0.0


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        name="High-Spenders",
        weight=0.12,
        orders_per_year=18.0,
        median_order_value=260.0,
        discount_on_promo=0.08,
        discount_off_promo=0.01,
        items_mean=2.5,
        category_alpha=(6.0, 4.0, 0.5, 3.0, 2.0, 1.0, 0.5, 0.5),
        channel_p=(0.55, 0.25, 0.2),
        age_mean=45.0,
    ),
    Archetype(
        name="Discount Seekers",
        weight=0.18,
        orders_per_year=22.0,
        median_order_value=32.0,
        promo_share=0.7,
        discount_on_promo=0.95,
        discount_off_promo=0.4,
        discount_depth=0.35,
        refund_rate=0.03,
        items_mean=2.0,
        category_alpha=(0.5, 3.0, 4.0, 1.0, 3.0, 1.0, 1.0, 2.0),
        channel_p=(0.45, 0.45, 0.1),
        age_mean=33.0,
    ),
    Archetype(
        name="Infrequent Shoppers",
        weight=0.22,
        orders_per_year=3.0,
        median_order_value=30.0,
        regularity=4.0,
        discount_on_promo=0.1,
        items_mean=1.2,
        channel_p=(0.3, 0.2, 0.5),
        age_mean=48.0,
        joined_between=(0.85, 1.0),
    ),
    Archetype(
        name="Loyal Customers",
        weight=0.18,
        orders_per_year=70.0,
        median_order_value=50.0,
        discount_on_promo=0.15,
        discount_off_promo=0.02,
        refund_rate=0.01,
        items_mean=2.0,
        category_alpha=(1.0, 1.0, 6.0, 3.0, 1.0, 1.0, 2.0, 1.0),
        channel_p=(0.3, 0.5, 0.2),
        age_mean=42.0,
    ),
    Archetype(
        name="New Customers",
        weight=0.12,
        orders_per_year=30.0,
        median_order_value=55.0,
        discount_on_promo=0.3,
        discount_off_promo=0.05,
        channel_p=(0.4, 0.5, 0.1),
        age_mean=29.0,
        age_sd=8.0,
        joined_between=(0.0, 0.1),
    ),
    Archetype(
        name="At-Risk",
        weight=0.18,
        orders_per_year=28.0,
        median_order_value=130.0,
        discount_on_promo=0.15,
        discount_off_promo=0.02,
        refund_rate=0.04,
        channel_p=(0.6, 0.2, 0.2),
        age_mean=38.0,
        joined_between=(0.85, 1.0),
        quiet_since=(0.35, 0.55),
        quiet_orders_per_year=0.25,
    ),
)

ARCHETYPE_NAMES: tuple[str, ...] = tuple(a.name for a in ARCHETYPES)


def promo_days_mask(days: npt.ArrayLike) -> np.ndarray:
    """Promotion calendar over day numbers (days since 1970-01-01, UTC): a boolean array.

    Promotion days are the first Friday-to-Sunday of every month, the Black Friday
    week (24-30 November) and the winter sale (26 December - 2 January): about 14%
    of days. It is a pure function of the date, so history and live stream agree.

    >>> import datetime as dt
    >>> day = (dt.date(2025, 11, 28) - dt.date(1970, 1, 1)).days
    >>> promo_days_mask([day, day + 5]).tolist()  # Black Friday, then an ordinary Wednesday
    [True, False]
    """
    d = np.asarray(days, dtype=np.int64)
    dates = d.astype("datetime64[D]")
    month_start = dates.astype("datetime64[M]").astype("datetime64[D]")
    dom = (dates - month_start).astype(np.int64) + 1
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    weekday = (d + 3) % 7  # 1970-01-01 was a Thursday; Monday == 0
    first_weekend = (dom <= 7) & (weekday >= 4)
    black_friday = (month == 11) & (dom >= 24) & (dom <= 30)
    winter_sale = ((month == 12) & (dom >= 26)) | ((month == 1) & (dom <= 2))
    return first_weekend | black_friday | winter_sale


def promo_day_share(days: int = 4 * 365) -> float:
    """The long-run share of promotion days (about 0.14).

    >>> 0.12 < promo_day_share() < 0.16
    True
    """
    return float(promo_days_mask(np.arange(days)).mean())
