"""Customer identifiers: the one rule that decides what may become a Redis key.

>>> is_valid_customer_id("CS1112")
True
>>> is_valid_customer_id("a b")
False
>>> validate_customer_id("x" * 65)
Traceback (most recent call last):
...
state.errors.InvalidCustomerId: customer id must be 1-64 characters of [A-Za-z0-9._:-], got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'
"""

from __future__ import annotations

import re

from state.errors import InvalidCustomerId

CUSTOMER_ID_PATTERN = r"[A-Za-z0-9._:-]{1,64}"
_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)


def is_valid_customer_id(value: object) -> bool:
    """True when ``value`` is a string of 1-64 characters of ``[A-Za-z0-9._:-]``."""
    return isinstance(value, str) and _CUSTOMER_ID.fullmatch(value) is not None


def validate_customer_id(value: object) -> str:
    """Return ``value`` unchanged when valid, else raise :class:`InvalidCustomerId`."""
    if not is_valid_customer_id(value):
        raise InvalidCustomerId(
            f"customer id must be 1-64 characters of [A-Za-z0-9._:-], got {value!r}"
        )
    return value  # type: ignore[return-value]
