"""How fast checkout events decode: ``.venv/bin/python bench/bench_decode.py [--events N]``.

Prints events/s (best of ``--repeat`` runs over the same ``--events`` messages) for:

* ``decode``: :func:`producer.contract.decode`, the consumer's hot path (fast lane);
* ``rules only``: the same decision without the msgspec fast lane (what every rejected
  message costs, and what valid ones would cost without the lane);
* ``json.loads + naive``: the standard library parser and a hand-written check of the
  same fields without precise reasons: the baseline a decoder should beat;
* ``msgspec typed only``: msgspec's typed decode with no further checks, the ceiling;
* ``decode, rejects``: a mix of invalid messages (each takes both lanes).

Messages mimic producers: about half the ``ts`` are RFC 3339 strings, half epoch numbers;
optional fields are present at random.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from producer.contract import (
    CheckoutEvent,
    _decode_by_rules,
    _wire_decoder,
    decode,
)
from state.ids import is_valid_customer_id

NOW = 1_795_773_600.0  # 2026-11-27T10:00:00Z
Message = tuple[bytes, bytes]


def make_messages(count: int, seed: int = 7) -> list[Message]:
    """``count`` valid (payload, key) pairs."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        cid = f"CS{rng.randrange(100_000):05d}"
        ts = NOW - rng.uniform(0, 90 * 86_400)
        obj: dict[str, Any] = {
            "event_id": f"{cid}-{i:08d}",
            "customer_id": cid,
            "ts": (
                datetime.fromtimestamp(round(ts, 3), UTC).isoformat(timespec="milliseconds")
                if rng.random() < 0.5
                else round(ts, 3)
            ),
            "amount": round(rng.lognormvariate(3.5, 1.0), 2),
        }
        if rng.random() < 0.5:
            obj.update(
                type=rng.choice(["purchase", "purchase", "purchase", "refund"]),
                discount=round(rng.uniform(0, 10), 2),
                items=rng.randint(1, 8),
                category=rng.choice(["shoes", "books", "electronics", "groceries"]),
                channel=rng.choice(["web", "app", "store"]),
                currency="EUR",
                schema_version=1,
            )
        if rng.random() < 0.3:
            obj.update(age=rng.randint(18, 90), gender=rng.choice(["f", "m", "x"]))
            obj["annual_income"] = rng.randint(10_000, 200_000)
        out.append((json.dumps(obj).encode(), cid.encode()))
    return out


def make_rejects(valid: Sequence[Message]) -> list[Message]:
    """Invalid messages of several kinds, built from valid ones."""
    out: list[Message] = []
    for i, (raw, key) in enumerate(valid):
        kind = i % 5
        if kind == 0:
            out.append((raw[:-3], key))  # truncated JSON
        elif kind == 1:
            out.append((raw, b"someone-else"))  # key_mismatch
        elif kind == 2:
            out.append((raw.replace(b'"amount": ', b'"amount": -'), key))  # negative:amount
        elif kind == 3:
            out.append((raw.replace(b'"customer_id"', b'"customer"'), key))  # missing_field
        else:
            out.append((raw[:-1] + b', "schema_version": 2}', key))  # unsupported version
    return out


def naive(raw: bytes, key: bytes | None) -> dict[str, Any] | None:
    """Baseline: ``json.loads`` and a plain check of the same rules, no reasons."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    cid = obj.get("customer_id")
    if not isinstance(obj.get("event_id"), str) or not is_valid_customer_id(cid):
        return None
    if key is None or key.decode("utf-8", "replace") != cid:
        return None
    ts = obj.get("ts")
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None
        ts = parsed.timestamp()
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts < 0 or ts > NOW + 86_400:
        return None
    for name in ("amount", "discount", "annual_income"):
        value = obj.get(name, 0)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or value < 0:
            return None
    items = obj.get("items", 1)
    if items is not None and (not isinstance(items, int) or isinstance(items, bool) or items < 1):
        return None
    if obj.get("schema_version", 1) not in (1, None):
        return None
    obj["ts"] = float(ts)
    return obj


def best_rates(
    cases: Sequence[tuple[str, Callable[[bytes, bytes], Any], Sequence[Message]]], repeat: int
) -> dict[str, float]:
    """Best events/s of each case over ``repeat`` rounds; cases take turns within a round,
    so a noisy neighbour slows them all alike."""
    best = dict.fromkeys((name for name, _, _ in cases), math.inf)
    for _ in range(repeat):
        for name, fn, messages in cases:
            start = time.perf_counter()
            for raw, key in messages:
                fn(raw, key)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(messages) / best[name] for name, _, messages in cases}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    valid = make_messages(args.events)
    rejects = make_rejects(valid)
    decoded = [decode(raw, key, now=NOW) for raw, key in valid]
    assert all(isinstance(e, CheckoutEvent) for e in decoded), "bench messages must be valid"
    assert all(naive(raw, key) is not None for raw, key in valid)
    assert not any(isinstance(decode(r, k, now=NOW), CheckoutEvent) for r, k in rejects)

    size = sum(len(raw) for raw, _ in valid) / len(valid)
    print(f"{args.events} events, {size:.0f} bytes on average, best of {args.repeat} runs")
    cases = [
        ("decode", lambda r, k: decode(r, k, now=NOW), valid),
        ("rules only", lambda r, k: _decode_by_rules(r, k, NOW, None), valid),
        ("json.loads + naive", naive, valid),
        ("msgspec typed only", lambda r, k: _wire_decoder.decode(r), valid),
        ("decode, rejects", lambda r, k: decode(r, k, now=NOW), rejects),
    ]
    rates = best_rates(cases, args.repeat)
    for name, per_second in rates.items():
        print(
            f"  {name:20s} {per_second:>10,.0f} events/s  {1e6 / per_second:6.2f} µs/event"
            f"  ({per_second / rates['decode']:4.2f}x decode)"
        )


if __name__ == "__main__":
    main()
