"""The store's hand-made fast paths equal the general ones they replace (no server needed)."""

from __future__ import annotations

import socket
import threading

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from state import keys as K
from state.errors import InvalidCustomerId
from state.ids import CUSTOMER_ID_PATTERN, validate_customer_ids
from state.redis_store import (
    _one_key_command,
    _one_key_frame,
    _read_replies,
    _script_command,
    pack_command,
)

ids = st.from_regex(CUSTOMER_ID_PATTERN, fullmatch=True)


@given(cid=ids, ttl=st.integers(0, 10**9), blob=st.binary(max_size=300))
def test_one_key_framing_is_the_packed_script_command(cid: str, ttl: int, blob: bytes) -> None:
    sha = "0123456789abcdef" * 2 + "01234567"
    head, tail = _one_key_frame(sha, str(ttl))
    key = "seg:v1:customer:" + cid
    want = pack_command(("EVALSHA", sha, "1", key, str(ttl), blob))
    assert _one_key_command(head, key, tail, blob) == want


def test_one_key_framing_carries_the_msgpack_record_like_script_command() -> None:
    import msgspec

    record = ["a", "1750000000.5", 0, "_p0", "7", "_v", ""]
    head, tail = _one_key_frame("f" * 40, "0")
    key = "seg:v1:customer:c1"
    got = _one_key_command(head, key, tail, msgspec.msgpack.encode([record]))
    assert got == _script_command("f" * 40, "0", [(key, record)])


@given(st.lists(ids, max_size=20))
def test_valid_batches_of_ids_pass_unchanged(batch: list[str]) -> None:
    assert validate_customer_ids(batch) == batch


@pytest.mark.parametrize(
    "batch", [["ok", ""], ["a\nb"], ["ok", "a b"], ["x" * 65], ["ok\n"], ["\n"], ["ok", 5]]
)
def test_one_invalid_id_fails_the_batch(batch: list[str]) -> None:
    with pytest.raises(InvalidCustomerId):
        validate_customer_ids(batch)


class _Conn:
    """The two attributes of a redis-py connection that the bare reader uses."""

    protocol = 2

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock


def test_replies_are_read_across_socket_reads_with_errors_as_values() -> None:
    replies = (
        b"*3\r\n:1\r\n$1\r\n2\r\n:1764000000123456\r\n"
        b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
        b"*3\r\n:0\r\n$-1\r\n$-1\r\n"
        b"-ERR something else\r\n"
        b":7\r\n"
    ) * 3000  # larger than one socket read
    ours, theirs = socket.socketpair()
    ours.settimeout(10)

    def send() -> None:  # in small pieces, cut anywhere
        for lo in range(0, len(replies), 997):
            theirs.sendall(replies[lo : lo + 997])

    writer = threading.Thread(target=send)
    writer.start()
    try:
        got = list(_read_replies(_Conn(ours), 5 * 3000))
    finally:
        writer.join()
        ours.close()
        theirs.close()
    assert got[0] == [1, b"2", 1764000000123456]
    assert isinstance(got[1], redis.exceptions.NoScriptError)
    assert got[2] == [0, None, None]
    assert type(got[3]) is redis.ResponseError and "something else" in str(got[3])
    assert got[4] == 7 and got[5] == got[0] and got[-1] == 7
    assert len(got) == 15000


def test_a_closed_connection_while_reading_is_an_error() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b":1\r\n")
    theirs.close()
    with pytest.raises(redis.ConnectionError):
        list(_read_replies(_Conn(ours), 2))
    ours.close()


@given(st.floats(allow_nan=False) | st.integers(-(10**17), 10**17))
def test_memo_number_is_number(value: float) -> None:
    num = K.memo_number()
    assert num(value) == K.number(value)
    assert num(value) == K.number(value)  # and again, from the memory
    assert num(-0.0) == "-0" and num(0.0) == "0" and num(-0.0) == "-0"
