"""The call path's JSON codec: orjson's output where it can, the standard library's where only it
can (so no valid document is refused for the codec's sake), and a ValueError for what is not JSON."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from llm_gateway import json_codec


def test_documents_round_trip_compact_and_in_utf8() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Grüß dich 👋"}], "n": 1}
    encoded = json_codec.dumps(body)
    assert encoded == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert json_codec.loads(encoded) == body
    assert json_codec.loads(encoded.decode()) == body


def test_what_only_the_standard_library_takes_still_goes_through() -> None:
    big = 2**70  # past orjson's 64 bits
    assert json.loads(json_codec.dumps({"seed": big})) == {"seed": big}
    reply = json_codec.loads(b'{"logprob": NaN, "top": Infinity, "n": 123456789012345678901234567890}')
    assert math.isnan(reply["logprob"])
    assert reply["top"] == math.inf
    assert reply["n"] == 123456789012345678901234567890


def test_a_body_that_is_not_json_is_a_value_error() -> None:
    for bad in (b"{not json", b"", b'{"a": 1', "\ud800"):
        with pytest.raises(json.JSONDecodeError):  # a ValueError, as the adapters expect
            json_codec.loads(bad)


def test_log_text_writes_what_json_cannot_hold_as_its_str() -> None:
    line = json_codec.text({"cost": Decimal("0.0000088500"), "big": 2**70, "ok": True})
    assert json.loads(line) == {"cost": "0.0000088500", "big": 2**70, "ok": True}
    assert " " not in line
