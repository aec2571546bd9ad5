"""JSON codecs side by side on the gateway's own per-call payloads: the upstream request body it
encodes, the upstream reply it decodes, one streamed chunk it decodes, and the access-log line it
encodes. Timed alone (200,000 rounds, best of 5); run it in a virtualenv with the candidates:

    python bench/json_codecs.py
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import orjson

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    "max_tokens": 256,
    "temperature": 0.7,
    "stream": False,
}
REPLY = json.dumps(
    {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I help you today?",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }
).encode()
CHUNK = json.dumps(
    {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": {"content": " world"}, "logprobs": None, "finish_reason": None}],
    }
)
LINE = {
    "ts": "2026-12-03T14:00:00.123Z",
    "level": "info",
    "logger": "llm_gateway.access",
    "worker": 0,
    "event": "access",
    "method": "Chat",
    "status": "OK",
    "duration_ms": 2.418,
    "request_id": "0f3c2a9e8b7d4c1a9e8b7d4c1a0f3c2a",
    "api_key": "bench",
    "model": "openai:gpt-4o-mini",
    "provider": "openai",
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "cost": Decimal("0.0000088500"),
    "cost_status": "PRICED",
    "usage_estimated": False,
}

_COMPACT = json.JSONEncoder(separators=(",", ":"))
_LOG = json.JSONEncoder(separators=(",", ":"), default=str)
_MSGSPEC = msgspec.json.Encoder()
_MSGSPEC_LOG = msgspec.json.Encoder(enc_hook=str)
_DECODER = msgspec.json.Decoder()

CASES: dict[str, dict[str, Callable[[], Any]]] = {
    "upstream body, encode to bytes": {
        "json.dumps(separators)": lambda: json.dumps(BODY, separators=(",", ":")).encode(),
        "json, one JSONEncoder": lambda: _COMPACT.encode(BODY).encode(),
        "orjson.dumps": lambda: orjson.dumps(BODY),
        "msgspec Encoder": lambda: _MSGSPEC.encode(BODY),
    },
    "upstream reply, decode": {
        "json.loads": lambda: json.loads(REPLY),
        "orjson.loads": lambda: orjson.loads(REPLY),
        "msgspec Decoder": lambda: _DECODER.decode(REPLY),
    },
    "stream chunk, decode": {
        "json.loads": lambda: json.loads(CHUNK),
        "orjson.loads": lambda: orjson.loads(CHUNK),
        "msgspec Decoder": lambda: _DECODER.decode(CHUNK),
    },
    "log line, encode to str": {
        "json.dumps(default=str)": lambda: json.dumps(LINE, default=str, separators=(",", ":")),
        "json, one JSONEncoder": lambda: _LOG.encode(LINE),
        "orjson.dumps(default=str)": lambda: orjson.dumps(LINE, default=str).decode(),
        "msgspec Encoder(enc_hook=str)": lambda: _MSGSPEC_LOG.encode(LINE).decode(),
    },
}


def main() -> None:
    print("| Payload | Codec | µs per call |")
    print("| --- | --- | --- |")
    for payload, codecs in CASES.items():
        for name, run in codecs.items():
            best = min(timeit.repeat(run, number=200_000, repeat=5)) / 200_000 * 1e6
            print(f"| {payload} | {name} | {best:.2f} |")


if __name__ == "__main__":
    main()
