"""A fake Amazon Bedrock Runtime server on loopback, speaking the real wire format.

It serves `POST /model/{modelId}/converse` (a JSON ConverseResponse) and
`POST /model/{modelId}/converse-stream` (an `application/vnd.amazon.eventstream` body of binary
frames), and records every request as a `Call`. Every request must be signed with AWS Signature
Version 4 for the fake's credentials and region (or, if it was given one, carry its Bedrock API
key as a bearer token):
the fake recomputes the signature with botocore's own signer and answers a mismatch with 403
InvalidSignatureException, as AWS does, and each call records whether it verified.

Replies are scripted per test (a JSON body, event-stream frames, an error with its
`x-amzn-ErrorType` header, raw bytes) or, when nothing is scripted, an echo of the last user
message's text: a ConverseResponse, or the events Bedrock streams for it: `messageStart`, a
`contentBlockDelta` per word, `contentBlockStop`, `messageStop`, `metadata`.

A frame is `total length | headers length | prelude CRC32 | headers | payload | message CRC32`, the
integers 4 bytes big-endian. An event's headers are `:event-type`, `:content-type` and
`:message-type` (string headers), its payload the event's compact JSON with the `p` padding field
Bedrock adds. An error inside the stream is a frame with `:message-type` exception and an
`:exception-type` header. Shapes, field names and statuses follow the service model
(botocore/data/bedrock-runtime/2023-09-30/service-2.json), checked against boto3 in
tests/test_fake_bedrock.py.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import itertools
import json
import re
import string
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from hashlib import sha256
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fakes.server import FakeServer, Recorded, words

# AWS's documented example credentials: what the fake expects unless a test builds it with others.
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
SIGNING_NAME = "bedrock"  # the service's signing name (its endpoint prefix is bedrock-runtime)
MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
INFERENCE_PROFILE_ID = "us.anthropic.claude-sonnet-4-20250514-v1:0"
REQUEST_ID = "5f1c7a52-3d4e-4b8a-9c61-2e7f0b9d8a14"
LATENCY_MS = 412
# How far a request's X-Amz-Date may be from the fake's clock, as AWS allows.
MAX_SKEW = timedelta(minutes=5)

# The HTTP status of each error: the service model's `httpStatusCode` for the operation's errors,
# and AWS's front end for the authentication ones (which the model does not list).
ERROR_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
    "IncompleteSignatureException": 400,
    "MissingAuthenticationTokenException": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
}
# Authentication errors come from AWS's front end, before Bedrock sees the request, and their
# x-amzn-ErrorType names the front end's namespace.
_FRONT_END_ERRORS = frozenset(
    {
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    }
)
# The exceptions a converse-stream may carry as frames (`:exception-type`, the model's member names).
STREAM_EXCEPTIONS = (
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
)

_dumps = partial(json.dumps, separators=(",", ":"))


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    # The event stream; a bytes item is written verbatim (a truncated or corrupted frame).
    frames: Sequence[Frame | bytes] | None = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0  # seconds between writes
    # Stream: the bytes cut into writes of these sizes, cycled ((1,) writes a byte at a time);
    # empty, one write per frame.
    chunk_sizes: Sequence[int] = ()
    # Stream: the frames before the first messageStop or metadata, then the connection drops.
    end_early: bool = False
    drop: bool = False  # stream: after the frames, drop the connection instead of ending the body
    delay: float = 0.0  # seconds before anything is sent (a hanging upstream)
    echo: bool = False  # the unscripted echo (JSON or stream, as the route asks), with the options above


@dataclass
class Call(Recorded):
    """A request as the fake saw it; `path` is decoded, `raw_path` as sent (what was signed)."""

    operation: str = ""  # "converse" or "converse-stream"
    model_id: str = ""
    raw_path: str = ""
    scheme: str = ""  # "sigv4", "bearer", or "" when the request had no Authorization
    verified: bool = False  # its signature (or API key) checked out
    auth_error: str | None = None  # else the error type the fake refused it with


# --- Bodies -------------------------------------------------------------------------------------


def usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read: int | None = None,
    cache_write: int | None = None,
    total: int | None = None,
    cache_details: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A TokenUsage. `inputTokens` counts the input not read from or written to the cache, and
    `totalTokens` (unless given) is input + output + cache reads + cache writes, as Bedrock counts.
    The cache fields are there only when given; `cache_details` is a list of cache_detail()."""
    result: dict[str, Any] = {"inputTokens": input_tokens, "outputTokens": output_tokens}
    result["totalTokens"] = (
        total if total is not None else input_tokens + output_tokens + (cache_read or 0) + (cache_write or 0)
    )
    if cache_read is not None:
        result["cacheReadInputTokens"] = cache_read
    if cache_write is not None:
        result["cacheWriteInputTokens"] = cache_write
    if cache_details is not None:
        result["cacheDetails"] = list(cache_details)
    return result


def cache_detail(ttl: str, input_tokens: int) -> dict[str, Any]:
    """The cache writes of one TTL ("5m" or "1h")."""
    return {"ttl": ttl, "inputTokens": input_tokens}


def text_block(text: str) -> dict[str, Any]:
    return {"text": text}


def tool_use_block(tool_use_id: str, name: str, input_: Any) -> dict[str, Any]:
    return {"toolUse": {"toolUseId": tool_use_id, "name": name, "input": input_}}


def reasoning_block(text: str, signature: str | None = None) -> dict[str, Any]:
    reasoning: dict[str, Any] = {"text": text}
    if signature is not None:
        reasoning["signature"] = signature
    return {"reasoningContent": {"reasoningText": reasoning}}


def redacted_reasoning_block(data: bytes) -> dict[str, Any]:
    """Reasoning the provider encrypted: a blob, which JSON carries base64-encoded."""
    return {"reasoningContent": {"redactedContent": base64.b64encode(data).decode()}}


def converse_response(
    content_blocks: Sequence[dict[str, Any]],
    stop_reason: str = "end_turn",
    usage_: dict[str, Any] | None = None,
    *,
    latency_ms: int = LATENCY_MS,
    additional_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ConverseResponse. Stop reasons: end_turn, tool_use, max_tokens, stop_sequence,
    guardrail_intervened, content_filtered, malformed_model_output, malformed_tool_use,
    model_context_window_exceeded."""
    body: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": list(content_blocks)}},
        "stopReason": stop_reason,
        "usage": usage_ if usage_ is not None else usage(10, 5),
        "metrics": {"latencyMs": latency_ms},
    }
    if additional_fields is not None:
        body["additionalModelResponseFields"] = additional_fields
    return body


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    """An error body: `{"message": ...}`, plus the fields some errors have (ModelErrorException's
    originalStatusCode and resourceName)."""
    return {"message": message, **extra}


def error_type_header(kind: str) -> str:
    """The `x-amzn-ErrorType` value AWS sends: the type, a colon, the service's namespace."""
    namespace = "com.amazon.coral.service" if kind in _FRONT_END_ERRORS else "com.amazon.bedrock"
    return f"{kind}:http://internal.amazon.com/coral/{namespace}/"


def error_reply(
    kind: str,
    message: str,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Reply:
    """An HTTP error as Bedrock sends it: the status of `kind` (ERROR_STATUS) unless given, the
    JSON body, and the `x-amzn-ErrorType` header botocore reads the error code from."""
    return Reply(
        status=status if status is not None else ERROR_STATUS[kind],
        json_body=error_body(message, **extra),
        headers={"x-amzn-ErrorType": error_type_header(kind), **(headers or {})},
    )


# --- Event-stream frames ------------------------------------------------------------------------

HeaderValue = str | bytes | bool | int


@dataclass(frozen=True)
class Frame:
    headers: Mapping[str, HeaderValue]
    payload: bytes

    @property
    def event_type(self) -> str | None:
        value = self.headers.get(":event-type")
        return value if isinstance(value, str) else None


# Header value types of the event-stream encoding (the ones this fake writes).
_TRUE, _FALSE, _INT32, _BYTES, _STRING = 0, 1, 4, 6, 7


def _header(name: str, value: HeaderValue) -> bytes:
    key = name.encode()
    head = struct.pack(">B", len(key)) + key
    if isinstance(value, bool):  # before int: a bool is an int
        return head + struct.pack(">B", _TRUE if value else _FALSE)
    if isinstance(value, int):
        return head + struct.pack(">Bi", _INT32, value)
    data, kind = (value.encode(), _STRING) if isinstance(value, str) else (value, _BYTES)
    return head + struct.pack(">BH", kind, len(data)) + data


def encode_frame(frame: Frame) -> bytes:
    headers = b"".join(_header(name, value) for name, value in frame.headers.items())
    prelude = struct.pack(">II", 16 + len(headers) + len(frame.payload), len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + frame.payload
    return message + struct.pack(">I", zlib.crc32(message))


def stream_bytes(frames: Iterable[Frame | bytes]) -> bytes:
    """The bytes the fake writes for `frames`."""
    return b"".join(f if isinstance(f, bytes) else encode_frame(f) for f in frames)


_PAD = string.ascii_lowercase + string.ascii_uppercase + string.digits


def _padding(body: Mapping[str, Any]) -> str:
    """Bedrock pads each event's JSON with a `p` field of varying length, so that the size of an
    event does not give away its text; the length here derives from the body, to stay repeatable."""
    return _PAD[: 1 + zlib.crc32(_dumps(body).encode()) % len(_PAD)]


def event(event_type: str, body: Mapping[str, Any], *, pad: bool = True) -> Frame:
    payload = {**body, "p": _padding(body)} if pad else dict(body)
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return Frame(headers, _dumps(payload).encode())


def message_start(role: str = "assistant") -> Frame:
    return event("messageStart", {"role": role})


def tool_use_start(index: int, tool_use_id: str, name: str) -> Frame:
    """The start of a toolUse block. Text and reasoning blocks have no start event: their first
    delta opens them."""
    start = {"toolUse": {"toolUseId": tool_use_id, "name": name}}
    return event("contentBlockStart", {"start": start, "contentBlockIndex": index})


def _delta(index: int, delta: dict[str, Any]) -> Frame:
    return event("contentBlockDelta", {"delta": delta, "contentBlockIndex": index})


def text_delta(index: int, text: str) -> Frame:
    return _delta(index, {"text": text})


def tool_input_delta(index: int, partial_json: str) -> Frame:
    """A piece of the tool's input JSON, as a string; the pieces concatenate to the JSON."""
    return _delta(index, {"toolUse": {"input": partial_json}})


def reasoning_delta(index: int, text: str) -> Frame:
    return _delta(index, {"reasoningContent": {"text": text}})


def reasoning_signature_delta(index: int, signature: str) -> Frame:
    return _delta(index, {"reasoningContent": {"signature": signature}})


def redacted_reasoning_delta(index: int, data: bytes) -> Frame:
    return _delta(index, {"reasoningContent": {"redactedContent": base64.b64encode(data).decode()}})


def content_block_stop(index: int) -> Frame:
    return event("contentBlockStop", {"contentBlockIndex": index})


def message_stop(stop_reason: str = "end_turn", additional_fields: dict[str, Any] | None = None) -> Frame:
    body: dict[str, Any] = {"stopReason": stop_reason}
    if additional_fields is not None:
        body["additionalModelResponseFields"] = additional_fields
    return event("messageStop", body)


def metadata(usage_: dict[str, Any] | None = None, *, latency_ms: int = LATENCY_MS) -> Frame:
    """The last event: the usage of the whole call and its latency."""
    body = {"usage": usage_ if usage_ is not None else usage(10, 5), "metrics": {"latencyMs": latency_ms}}
    return event("metadata", body)


def exception_frame(kind: str, message: str, **extra: Any) -> Frame:
    """An error inside the stream. Kinds: STREAM_EXCEPTIONS; modelStreamErrorException may add
    originalStatusCode and originalMessage."""
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return Frame(headers, _dumps({"message": message, **extra}).encode())


def error_frame(code: str, message: str) -> Frame:
    """An error of the event-stream protocol itself: its code and message in headers, no payload."""
    return Frame({":error-code": code, ":error-message": message, ":message-type": "error"}, b"")


def text_events(
    pieces: Sequence[str], usage_: dict[str, Any] | None = None, *, stop_reason: str = "end_turn"
) -> list[Frame]:
    """The events of a streamed text reply, as Bedrock sends them."""
    use = usage_ if usage_ is not None else usage(10, max(len(pieces), 1))
    return [
        message_start(),
        *(text_delta(0, piece) for piece in pieces),
        content_block_stop(0),
        message_stop(stop_reason),
        metadata(use),
    ]


def tool_use_events(
    text_pieces: Sequence[str],
    tool_use_id: str,
    name: str,
    input_pieces: Sequence[str],
    usage_: dict[str, Any] | None = None,
) -> list[Frame]:
    """Text (when there is any) at index 0, then a toolUse block whose input arrives as JSON
    pieces, ending with stop reason tool_use."""
    use = usage_ if usage_ is not None else usage(10, 20)
    frames = [message_start()]
    index = 0
    if text_pieces:
        frames += [*(text_delta(0, piece) for piece in text_pieces), content_block_stop(0)]
        index = 1
    return [
        *frames,
        tool_use_start(index, tool_use_id, name),
        *(tool_input_delta(index, piece) for piece in input_pieces),
        content_block_stop(index),
        message_stop("tool_use"),
        metadata(use),
    ]


def reasoning_events(
    reasoning_pieces: Sequence[str],
    signature: str,
    text_pieces: Sequence[str],
    usage_: dict[str, Any] | None = None,
) -> list[Frame]:
    """A reasoning block (its text, then its signature) at index 0, then a text block."""
    use = usage_ if usage_ is not None else usage(10, 30)
    return [
        message_start(),
        *(reasoning_delta(0, piece) for piece in reasoning_pieces),
        reasoning_signature_delta(0, signature),
        content_block_stop(0),
        *(text_delta(1, piece) for piece in text_pieces),
        content_block_stop(1),
        message_stop("end_turn"),
        metadata(use),
    ]


def chunked(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """`data` cut into pieces of `sizes`, cycled."""
    position = 0
    for size in itertools.cycle(sizes):
        if position >= len(data):
            return
        yield data[position : position + size]
        position += size


def last_user_text(body: dict[str, Any]) -> str:
    """The text blocks of the last user message of a Converse request."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return " ".join(block["text"] for block in message.get("content", []) if "text" in block)
    return ""


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- Signature Version 4 ------------------------------------------------------------------------

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed_headers>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)
_BAD_TOKEN = "The security token included in the request is invalid."
_AMZ_DATE = "%Y%m%dT%H%M%SZ"

AuthError = tuple[str, str]  # (error type, message)


def signature_of(
    credentials: Credentials,
    region: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    amz_date: str,
) -> str:
    """The SigV4 signature of a request as botocore computes it, at the time `amz_date` (rather
    than now): its canonical request, string to sign and signing key, from botocore's SigV4Auth."""
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(credentials, SIGNING_NAME, region)
    signature: str = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    return signature


def _skew(signed_at: datetime, amz_date: str) -> str | None:
    """AWS's message for a request signed more than MAX_SKEW away from now, or None."""
    now = datetime.now(UTC)
    if signed_at < now - MAX_SKEW:
        limit, sign, verb = now - MAX_SKEW, "-", "expired: {} is now earlier than"
    elif signed_at > now + MAX_SKEW:
        limit, sign, verb = now + MAX_SKEW, "+", "not yet current: {} is still later than"
    else:
        return None
    return (
        f"Signature {verb.format(amz_date)} {limit.strftime(_AMZ_DATE)} "
        f"({now.strftime(_AMZ_DATE)} {sign} 5 min.)"
    )


# --- Server -------------------------------------------------------------------------------------


class FakeBedrock(FakeServer[Reply]):
    """Bedrock Runtime for the given credentials and region; `api_key`, if given, is also accepted
    as `Authorization: Bearer <api_key>` (a Bedrock API key)."""

    def __init__(
        self,
        *,
        access_key_id: str = ACCESS_KEY_ID,
        secret_access_key: str = SECRET_ACCESS_KEY,
        session_token: str | None = None,
        region: str = REGION,
        api_key: str | None = None,
    ) -> None:
        super().__init__(["/model/{model_id}/converse", "/model/{model_id}/converse-stream"])
        self.credentials = Credentials(access_key_id, secret_access_key, session_token)
        self.region = region
        self.api_key = api_key
        self.calls: list[Call] = []  # the same requests as `requests`, with what the fake made of them

    @property
    def base_url(self) -> str:
        """The endpoint: clients append `/model/{modelId}/converse`."""
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = _json_or_empty(raw)
        scheme, error = self._authenticate(request, raw)
        call = Call(
            request.method,
            request.path,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            dict(request.query),
            operation=request.path.rsplit("/", 1)[-1],
            model_id=request.match_info["model_id"],
            raw_path=request.raw_path,
            scheme=scheme,
            verified=error is None,
            auth_error=error[0] if error else None,
        )
        self.calls.append(call)
        self.requests.append(call)
        self._arrived.set()
        if error is not None:  # refused before any model sees it: no scripted reply is used up
            refusal = error_reply(*error)
            if scheme == "bearer":  # Bedrock capitalises the field when it refuses an API key
                refusal.json_body = {"Message": error[1]}
            return await self._reply(request, refusal)
        reply = self._script.popleft() if self._script else self._echo(body)
        return await self._reply(request, reply)

    def _authenticate(self, request: web.Request, body: bytes) -> tuple[str, AuthError | None]:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            if self.api_key is not None and hmac.compare_digest(authorization[7:], self.api_key):
                return "bearer", None
            return "bearer", (
                "AccessDeniedException",
                "Authentication failed: Please make sure your API Key is valid.",
            )
        if not authorization:
            return "", ("MissingAuthenticationTokenException", "Missing Authentication Token")
        return "sigv4", self._verify_sigv4(request, body, authorization)

    def _verify_sigv4(self, request: web.Request, body: bytes, authorization: str) -> AuthError | None:
        match = _AUTHORIZATION.fullmatch(authorization.strip())
        amz_date = request.headers.get("X-Amz-Date", "")
        if match is None or not amz_date:
            return (
                "IncompleteSignatureException",
                f"Malformed Authorization or no X-Amz-Date: {authorization}",
            )
        access_key, _, scope = match["credential"].partition("/")
        if access_key != self.credentials.access_key:
            return "UnrecognizedClientException", _BAD_TOKEN
        if request.headers.get("X-Amz-Security-Token") != self.credentials.token:
            return "UnrecognizedClientException", _BAD_TOKEN
        date, _, rest = scope.partition("/")
        if rest != f"{self.region}/{SIGNING_NAME}/aws4_request" or date != amz_date[:8]:
            return (
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, service and date: {scope}",
            )
        try:
            signed_at = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
        except ValueError:
            return (
                "IncompleteSignatureException",
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.",
            )
        if (skew := _skew(signed_at, amz_date)) is not None:
            return "InvalidSignatureException", skew
        content_sha = request.headers.get("X-Amz-Content-SHA256")
        if content_sha not in (None, "UNSIGNED-PAYLOAD", sha256(body).hexdigest()):
            return (
                "InvalidSignatureException",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        signed = match["signed_headers"].split(";")
        headers = {name: ",".join(request.headers.getall(name)) for name in signed if name in request.headers}
        # The URL as it came on the wire: the signer encodes its path once more, as the client's did.
        url = f"http://{request.headers.get('Host', '')}{request.raw_path}"
        expected = signature_of(self.credentials, self.region, request.method, url, headers, body, amz_date)
        if not hmac.compare_digest(expected, match["signature"]):
            return "InvalidSignatureException", _BAD_SIGNATURE
        return None

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.delay:
            await self._hang(reply.delay)
        if reply.echo:
            options = {
                name: getattr(reply, name) for name in ("chunk_delay", "chunk_sizes", "end_early", "drop")
            }
            reply = dataclasses.replace(self._echo_of(await request.read(), request.path), **options)
        headers = {"x-amzn-RequestId": REQUEST_ID, **reply.headers}
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=headers)
        if reply.frames is None:
            # application/json with no charset parameter, as AWS sends it
            headers = {"Content-Type": "application/json", **headers}
            return web.Response(status=reply.status, body=_dumps(reply.json_body).encode(), headers=headers)
        response = web.StreamResponse(
            status=reply.status, headers={"Content-Type": "application/vnd.amazon.eventstream", **headers}
        )
        frames: Sequence[Frame | bytes] = reply.frames
        if reply.end_early:  # no stop reason, no usage: the connection drops
            frames = list(
                itertools.takewhile(
                    lambda f: isinstance(f, bytes) or f.event_type not in ("messageStop", "metadata"), frames
                )
            )
        writes: Iterable[bytes] = (
            chunked(stream_bytes(frames), reply.chunk_sizes)
            if reply.chunk_sizes
            else (f if isinstance(f, bytes) else encode_frame(f) for f in frames)
        )
        return await self._stream(
            request, response, writes, chunk_delay=reply.chunk_delay, drop=reply.drop or reply.end_early
        )

    def _echo(self, body: dict[str, Any]) -> Reply:
        return Reply(echo=True)  # JSON or a stream: the route decides, in _reply

    def _echo_of(self, raw: bytes, path: str) -> Reply:
        text = last_user_text(_json_or_empty(raw))
        use = usage(10, max(len(text) // 4, 1))
        if path.endswith("/converse-stream"):
            return Reply(frames=text_events(words(text), use))
        return Reply(json_body=converse_response([text_block(text)], usage_=use))
