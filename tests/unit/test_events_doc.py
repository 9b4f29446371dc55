"""docs/events.md and the decoder agree: every example there is decoded here.

Convention of the page: each ```json block is preceded by
``<!-- expect: <ok|reason> [key=<key>|key=none] [currency=<code>] [schema-blind] -->``;
``<!-- examples-now: <RFC 3339> -->`` fixes the clock; ``<!-- reasons -->`` precedes the
complete list of reason codes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from producer.contract import (
    MAX_EVENT_ID_CHARS,
    MAX_FUTURE_SECONDS,
    MAX_ITEMS,
    MAX_PAYLOAD_BYTES,
    REASONS,
    SCHEMA_PATH,
    CheckoutEvent,
    Rejection,
    _parse_rfc3339,
    decode,
    validate,
)
from state.errors import InvalidEvent

DOC = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
SCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
EXAMPLE = re.compile(
    r"<!--\s*expect:\s*(?P<spec>[^>]*?)\s*-->\s*\n```json\n(?P<body>.*?)\n```", re.S
)
NOW = _parse_rfc3339(re.search(r"<!--\s*examples-now:\s*(\S+)\s*-->", DOC)[1])  # type: ignore[index]
# Rules a JSON Schema cannot state (see the schema's description).
SCHEMA_BLIND = {
    "too_large",
    "invalid_json",
    "missing_key",
    "key_mismatch",
    "future_ts",
    "currency_mismatch",
}


@dataclass
class Example:
    expect: str
    body: str
    key: bytes | None
    currency: str | None
    schema_blind: bool

    @property
    def value(self) -> Any:
        return json.loads(self.body)  # Python's json reads NaN; fine for looking at fields


def _examples() -> list[Example]:
    found = []
    for match in EXAMPLE.finditer(DOC):
        expect, *options = match["spec"].split()
        opts = dict(o.split("=", 1) for o in options if "=" in o)
        body = match["body"]
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if "key" in opts:
            key = None if opts["key"] == "none" else opts["key"].encode()
        elif isinstance(value, dict) and isinstance(value.get("customer_id"), str):
            key = value["customer_id"].encode()
        else:
            key = None
        blind = (
            "schema-blind" in options or expect in SCHEMA_BLIND or expect.startswith("non_finite:")
        )
        found.append(Example(expect, body, key, opts.get("currency"), blind))
    return found


EXAMPLES = _examples()


def test_every_json_block_is_an_annotated_example() -> None:
    assert len(EXAMPLES) == DOC.count("```json")
    assert sum(e.expect == "ok" for e in EXAMPLES) >= 3
    assert sum(e.expect != "ok" for e in EXAMPLES) >= 10


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.expect for e in EXAMPLES])
def test_example_decodes_as_annotated(example: Example) -> None:
    got = decode(example.body.encode(), example.key, now=NOW, currency=example.currency)
    if example.expect == "ok":
        assert isinstance(got, CheckoutEvent), got
    else:
        assert example.expect in REASONS
        assert isinstance(got, Rejection) and got.reason == example.expect, got


# validate() takes a mapping of Python values and no key: wire-only faults cannot reach it.
WIRE_ONLY = ("invalid_json", "missing_key", "key_mismatch", "not_an_object")
MAPPINGS = [e for e in EXAMPLES if not e.expect.startswith(WIRE_ONLY)]


@pytest.mark.parametrize("example", MAPPINGS, ids=[e.expect for e in MAPPINGS])
def test_example_validates_as_annotated(example: Example) -> None:
    if example.expect == "ok":
        assert validate(example.value, now=NOW, currency=example.currency) == decode(
            example.body.encode(), example.key, now=NOW, currency=example.currency
        )
    else:
        with pytest.raises(InvalidEvent) as caught:
            validate(example.value, now=NOW, currency=example.currency)
        assert caught.value.reason == example.expect


SCHEMA_SEES = [e for e in EXAMPLES if not e.schema_blind]


@pytest.mark.parametrize("example", SCHEMA_SEES, ids=[e.expect for e in SCHEMA_SEES])
def test_json_schema_agrees_with_example(example: Example) -> None:
    assert SCHEMA.is_valid(example.value) is (example.expect == "ok")


def test_reason_list_is_the_code_list() -> None:
    block = re.search(r"<!--\s*reasons\s*-->\s*\n```text\n(.*?)\n```", DOC, re.S)
    assert block is not None
    listed = block[1].split()
    assert len(listed) == len(set(listed))
    assert set(listed) == REASONS


def test_every_reason_family_is_explained_in_the_table() -> None:
    for family in {r.split(":")[0] for r in REASONS}:
        assert re.search(rf"^\| `{family}(:<field>)?` \|", DOC, re.M), family


def test_limits_in_the_prose_are_the_code_limits() -> None:
    assert f"{MAX_PAYLOAD_BYTES} bytes" in DOC
    assert f"{MAX_FUTURE_SECONDS:.0f} s" in DOC
    assert f"1-{MAX_EVENT_ID_CHARS} characters" in DOC
    assert f"1 to {MAX_ITEMS}" in DOC


def test_schema_file_is_a_valid_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == set(CheckoutEvent.__struct_fields__)
    assert set(schema["required"]) == {"event_id", "customer_id", "ts", "amount"}
