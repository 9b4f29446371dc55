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
_CUSTOMER_IDS = re.compile(f"(?:{CUSTOMER_ID_PATTERN}\n)*")


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


def validate_customer_ids(ids: list[str]) -> list[str]:
    """``ids`` when every one is valid (one regex over the whole batch: the write paths'
    form), else the first invalid one raises as :func:`validate_customer_id`.

    >>> validate_customer_ids(["a", "b.1"])
    ['a', 'b.1']
    """
    try:
        text = "\n".join(ids) + "\n"
    except TypeError:  # not all strings
        text = ""
    ok = text.count("\n") == len(ids) and _CUSTOMER_IDS.fullmatch(text) is not None
    return ids if ok else [validate_customer_id(c) for c in ids]
