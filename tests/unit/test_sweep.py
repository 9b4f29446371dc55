"""Recency-sweep pieces that need no server."""

from __future__ import annotations

from consumer.sweep import marker, owned_by, parse_marker


def test_markers_round_trip() -> None:
    assert parse_marker(marker("m-1.2", 1750000000.125, 7)) == ("m-1.2", "1750000000.125", 7)
    assert parse_marker("garbage") is None


def test_only_owned_partitions_are_swept() -> None:
    mine = owned_by({"count": 4, "owned": {0, 1}})
    theirs = owned_by({"count": 4, "owned": {2, 3}})
    ids = [f"C{i:06d}" for i in range(200)]
    assert all(mine(c) != theirs(c) for c in ids)
    assert 50 < sum(mine(c) for c in ids) < 150
