"""The fake Bedrock server against the oracle: boto3's bedrock-runtime client parses every body,
event stream and error the fake sends into exactly what the fake meant (botocore drops fields its
service model does not know, so a parse that round-trips has none), its SigV4 signatures verify at
the fake and wrong ones do not, and botocore's event-stream decoder reads the fake's frames (and
AWS's known-answer frames come out of the fake's encoder byte for byte)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from unittest import mock

import aiohttp
import boto3
import botocore
import botocore.session
import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError, ReadTimeoutError
from yarl import URL

from tests.fakes.bedrock import (
    ACCESS_KEY_ID,
    ERROR_STATUS,
    INFERENCE_PROFILE_ID,
    MODEL_ID,
    REGION,
    REQUEST_ID,
    SECRET_ACCESS_KEY,
    STREAM_EXCEPTIONS,
    FakeBedrock,
    Frame,
    Reply,
    cache_detail,
    content_block_stop,
    converse_response,
    encode_frame,
    error_frame,
    error_reply,
    event,
    exception_frame,
    message_start,
    message_stop,
    metadata,
    reasoning_block,
    reasoning_events,
    redacted_reasoning_block,
    redacted_reasoning_delta,
    stream_bytes,
    text_block,
    text_delta,
    text_events,
    tool_use_block,
    tool_use_events,
    usage,
)

Client = Any  # boto3's clients are built at run time from the service model: no static type
USER = [{"role": "user", "content": [{"text": "What is the weather in Oslo?"}]}]
SERVICE_MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")


def bedrock_client(fake: FakeBedrock, **overrides: Any) -> Client:
    options: dict[str, Any] = {
        "endpoint_url": fake.base_url,
        "region_name": REGION,
        "aws_access_key_id": ACCESS_KEY_ID,
        "aws_secret_access_key": SECRET_ACCESS_KEY,
        # one attempt: each test scripts one reply per call; read_timeout for the hanging-reply test
        "config": Config(retries={"total_max_attempts": 1}, read_timeout=5, connect_timeout=2),
        **overrides,
    }
    return boto3.client("bedrock-runtime", **options)


@pytest.fixture(autouse=True)
def no_ambient_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """boto3 would also read the machine's AWS profile, config files and API key variable."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    async with FakeBedrock() as server:
        yield server


@pytest.fixture
def client(fake: FakeBedrock) -> Client:
    return bedrock_client(fake)


async def converse(client: Client, model_id: str = MODEL_ID) -> dict[str, Any]:
    response = await asyncio.to_thread(client.converse, modelId=model_id, messages=USER)
    return cast(dict[str, Any], response)


async def converse_stream(client: Client, seen: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The events of a ConverseStream call, read to the end; also appended to `seen` as they come,
    for tests where the stream fails midway."""
    events = seen if seen is not None else []

    def read() -> None:
        response = client.converse_stream(modelId=MODEL_ID, messages=USER)
        events.extend(response["stream"])

    await asyncio.to_thread(read)
    return events


async def client_error(call: Callable[[], Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(call)
    return caught.value


def code_of(err: ClientError) -> str:
    return cast(str, err.response["Error"]["Code"])


def without_metadata(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def as_parsed(value: Any) -> Any:
    """What botocore makes of JSON the fake sent: blobs (redactedContent) base64-decoded."""
    if isinstance(value, dict):
        return {k: base64.b64decode(v) if k == "redactedContent" else as_parsed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_parsed(v) for v in value]
    return value


def parsed_events(frames: Sequence[Frame]) -> list[dict[str, Any]]:
    """What boto3 yields for `frames`: each event's payload under its type, without the padding."""
    events = []
    for frame in frames:
        body = json.loads(frame.payload)
        body.pop("p")
        assert frame.event_type is not None
        events.append({frame.event_type: as_parsed(body)})
    return events


# --- The fake's tables against the service model ------------------------------------------------


def test_error_statuses_are_the_service_models() -> None:
    errors = SERVICE_MODEL.operation_model("Converse").error_shapes
    stream_errors = SERVICE_MODEL.operation_model("ConverseStream").error_shapes
    assert [shape.name for shape in errors] == [shape.name for shape in stream_errors]
    modelled = {shape.name: shape.metadata["error"]["httpStatusCode"] for shape in errors}
    assert modelled == {kind: status for kind, status in ERROR_STATUS.items() if kind in modelled}
    assert len(modelled) == 9


def test_stream_exceptions_are_the_service_models() -> None:
    stream = SERVICE_MODEL.operation_model("ConverseStream").output_shape.members["stream"]
    exceptions = [name for name, shape in stream.members.items() if shape.metadata.get("exception")]
    assert sorted(exceptions) == sorted(STREAM_EXCEPTIONS)


# --- Converse -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", [MODEL_ID, INFERENCE_PROFILE_ID])
async def test_unscripted_converse_echoes_and_its_signature_verifies(
    fake: FakeBedrock, client: Client, model_id: str
) -> None:
    response = await converse(client, model_id)
    assert response["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "What is the weather in Oslo?"}],
    }
    assert response["ResponseMetadata"]["RequestId"] == REQUEST_ID
    [call] = fake.calls
    assert fake.requests == [call]
    assert (call.operation, call.model_id, call.scheme, call.verified) == (
        "converse",
        model_id,
        "sigv4",
        True,
    )
    # the SDK sends the model id's ':' percent-encoded, and signed that encoded path
    assert call.raw_path == f"/model/{model_id.replace(':', '%3A')}/converse"
    assert call.body["messages"] == USER
    assert call.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")


@pytest.mark.parametrize(
    "body",
    [
        converse_response([text_block("Sunny, 21 °C.")]),
        converse_response(
            [
                text_block("Let me check."),
                tool_use_block("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "weather", {"city": "Oslo"}),
            ],
            "tool_use",
            usage(120, 40),
        ),
        converse_response(
            [
                reasoning_block("Oslo is in Norway.", "EqQBCgIYAhIM"),
                redacted_reasoning_block(b"\x01\x02secret"),
                text_block("Sunny."),
            ],
            usage_=usage(50, 80),
        ),
        converse_response(
            [text_block("Cached.")],
            "max_tokens",
            usage(
                4,
                72,
                cache_read=1028,
                cache_write=300,
                cache_details=[cache_detail("1h", 100), cache_detail("5m", 200)],
            ),
            latency_ms=1234,
            additional_fields={"stop_sequence": None},
        ),
    ],
    ids=["text", "tool_use", "reasoning", "cache_usage"],
)
async def test_converse_bodies_parse_exactly(fake: FakeBedrock, client: Client, body: dict[str, Any]) -> None:
    fake.script(Reply(json_body=body))
    response = await converse(client)
    assert without_metadata(response) == as_parsed(body)
    assert fake.calls[0].verified


def test_usage_counts_total_as_bedrock_does() -> None:
    assert usage(4, 72, cache_read=1028, cache_write=0) == {
        "inputTokens": 4,
        "outputTokens": 72,
        "totalTokens": 1104,
        "cacheReadInputTokens": 1028,
        "cacheWriteInputTokens": 0,
    }


@pytest.mark.parametrize(
    "kind", sorted(shape.name for shape in SERVICE_MODEL.operation_model("Converse").error_shapes)
)
@pytest.mark.parametrize("streaming", [False, True], ids=["converse", "converse_stream"])
async def test_errors_become_the_sdks_client_errors(
    fake: FakeBedrock, client: Client, kind: str, streaming: bool
) -> None:
    fake.script(error_reply(kind, f"{kind} happened"))
    err = await client_error(
        (lambda: client.converse_stream(modelId=MODEL_ID, messages=USER))
        if streaming
        else (lambda: client.converse(modelId=MODEL_ID, messages=USER))
    )
    assert code_of(err) == kind
    assert err.response["Error"]["Message"] == f"{kind} happened"
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == ERROR_STATUS[kind]
    assert err.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
        f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )
    assert isinstance(err, getattr(client.exceptions, kind))


async def test_model_error_carries_its_extra_fields(fake: FakeBedrock, client: Client) -> None:
    fake.script(
        error_reply("ModelErrorException", "The model failed.", originalStatusCode=500, resourceName=MODEL_ID)
    )
    err = await client_error(lambda: client.converse(modelId=MODEL_ID, messages=USER))
    assert isinstance(err, client.exceptions.ModelErrorException)
    assert (err.response["originalStatusCode"], err.response["resourceName"]) == (500, MODEL_ID)


async def test_a_hanging_reply_times_the_client_out(fake: FakeBedrock) -> None:
    client = bedrock_client(fake, config=Config(retries={"total_max_attempts": 1}, read_timeout=0.3))
    fake.script(Reply(delay=5.0))
    with pytest.raises(ReadTimeoutError):
        await converse(client)
    assert await fake.disconnected() is not None


# --- ConverseStream -----------------------------------------------------------------------------


async def test_unscripted_stream_echoes_word_by_word(fake: FakeBedrock, client: Client) -> None:
    events = await converse_stream(client)
    assert events[0] == {"messageStart": {"role": "assistant"}}
    deltas = [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]
    assert "".join(deltas) == "What is the weather in Oslo?"
    assert len(deltas) == 6
    assert events[-2:] == [
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": usage(10, 7), "metrics": {"latencyMs": 412}}},
    ]
    [call] = fake.calls
    assert (call.operation, call.verified) == ("converse-stream", True)


STREAMS = {
    "text": text_events(["Sunny", ", 21 °C."]),
    "tool_use": tool_use_events(
        ["Let me check."], "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "weather", ['{"ci', 'ty": "Os', 'lo"}']
    ),
    "tool_use_only": tool_use_events([], "tooluse_1", "weather", ['{"city": "Oslo"}']),
    "reasoning": reasoning_events(["Oslo is ", "in Norway."], "EqQBCgIYAhIM", ["Sunny."]),
    "redacted_reasoning": [
        message_start(),
        redacted_reasoning_delta(0, b"\x00\xffsecret"),
        content_block_stop(0),
        text_delta(1, "Sunny."),
        content_block_stop(1),
        message_stop("end_turn", {"stop_sequence": None}),
        metadata(usage(3, 9, cache_read=2048, cache_write=0), latency_ms=987),
    ],
}


@pytest.mark.parametrize("frames", STREAMS.values(), ids=STREAMS.keys())
async def test_streams_parse_exactly(fake: FakeBedrock, client: Client, frames: list[Frame]) -> None:
    fake.script(Reply(frames=frames))
    assert await converse_stream(client) == parsed_events(frames)
    assert fake.calls[0].verified


@pytest.mark.parametrize("sizes", [(1,), (2, 3, 5), (13,), (4096,)], ids=str)
async def test_a_stream_split_at_any_boundary_parses_the_same(
    fake: FakeBedrock, client: Client, sizes: tuple[int, ...]
) -> None:
    frames = STREAMS["tool_use"]
    fake.script(Reply(frames=frames, chunk_sizes=sizes))
    assert await converse_stream(client) == parsed_events(frames)


async def test_an_echo_split_into_bytes_with_delays(fake: FakeBedrock, client: Client) -> None:
    fake.script(Reply(echo=True, chunk_sizes=(5,), chunk_delay=0.001))
    events = await converse_stream(client)
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e) == (
        "What is the weather in Oslo?"
    )


@pytest.mark.parametrize("kind", STREAM_EXCEPTIONS)
async def test_an_exception_frame_midway_raises_its_error(
    fake: FakeBedrock, client: Client, kind: str
) -> None:
    frames = [message_start(), text_delta(0, "Sun"), exception_frame(kind, f"{kind} midway")]
    fake.script(Reply(frames=frames, chunk_sizes=(1,)))
    seen: list[dict[str, Any]] = []
    with pytest.raises(EventStreamError) as caught:
        await converse_stream(client, seen)
    assert code_of(caught.value) == kind
    assert caught.value.response["Error"]["Message"] == f"{kind} midway"
    assert seen == parsed_events(frames[:2])


async def test_a_model_stream_error_carries_the_original_status(fake: FakeBedrock, client: Client) -> None:
    frame = exception_frame(
        "modelStreamErrorException",
        "Model stream failed",
        originalStatusCode=529,
        originalMessage="Overloaded",
    )
    fake.script(Reply(frames=[message_start(), frame]))
    with pytest.raises(EventStreamError) as caught:
        await converse_stream(client)
    assert code_of(caught.value) == "modelStreamErrorException"
    assert caught.value.response["Error"]["Message"] == "Model stream failed"


async def test_an_event_stream_error_frame_raises(fake: FakeBedrock, client: Client) -> None:
    fake.script(Reply(frames=[message_start(), error_frame("InternalFailure", "The stream failed.")]))
    with pytest.raises(EventStreamError) as caught:
        await converse_stream(client)
    assert (code_of(caught.value), caught.value.response["Error"]["Message"]) == (
        "InternalFailure",
        "The stream failed.",
    )


async def test_a_corrupted_frame_fails_the_decoders_checksum(fake: FakeBedrock, client: Client) -> None:
    damaged = bytearray(encode_frame(text_delta(0, "Sunny")))
    damaged[-10] ^= 0x01  # a payload byte: the message CRC no longer matches
    fake.script(Reply(frames=[message_start(), bytes(damaged), *STREAMS["text"][-2:]]))
    with pytest.raises(ChecksumMismatch):
        await converse_stream(client)


@pytest.mark.parametrize(
    ("reply", "whole_frames"),
    [
        (Reply(frames=STREAMS["text"], end_early=True), 4),  # up to the last contentBlockStop
        (Reply(frames=[*STREAMS["text"][:3], encode_frame(STREAMS["text"][3])[:20]], drop=True), 3),
    ],
    ids=["end_early", "truncated_frame"],
)
async def test_a_dropped_stream_never_ends_cleanly(
    fake: FakeBedrock, client: Client, reply: Reply, whole_frames: int
) -> None:
    fake.script(reply)
    seen: list[dict[str, Any]] = []
    with pytest.raises(urllib3.exceptions.ProtocolError):  # botocore passes the transport's error on
        await converse_stream(client, seen)
    assert seen == parsed_events(STREAMS["text"][:whole_frames])
    assert not any("messageStop" in e for e in seen)


# --- Signatures ---------------------------------------------------------------------------------


async def test_a_wrong_secret_is_refused_without_using_the_script(fake: FakeBedrock) -> None:
    fake.script(Reply(json_body=converse_response([text_block("never sent")])))
    client = bedrock_client(fake, aws_secret_access_key="not-the-secret")
    err = await client_error(lambda: client.converse(modelId=MODEL_ID, messages=USER))
    assert code_of(err) == "InvalidSignatureException"
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err.response["Error"]["Message"].startswith("The request signature we calculated does not match")
    [call] = fake.calls
    assert (call.scheme, call.verified, call.auth_error) == ("sigv4", False, "InvalidSignatureException")
    assert fake.pending() == 1


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"aws_access_key_id": "AKIAI44QH8DHBEXAMPLE"}, "UnrecognizedClientException"),
        ({"aws_session_token": "FwoGZXIvYXdzEXAMPLE"}, "UnrecognizedClientException"),
        ({"region_name": "eu-west-1"}, "InvalidSignatureException"),
        ({"config": Config(signature_version=botocore.UNSIGNED)}, "MissingAuthenticationTokenException"),
    ],
    ids=["unknown_key", "unexpected_session_token", "wrong_region", "unsigned"],
)
async def test_wrong_credentials_are_refused(fake: FakeBedrock, overrides: dict[str, Any], code: str) -> None:
    client = bedrock_client(fake, **overrides)
    err = await client_error(lambda: client.converse(modelId=MODEL_ID, messages=USER))
    assert (code_of(err), err.response["ResponseMetadata"]["HTTPStatusCode"]) == (code, 403)
    assert not fake.calls[0].verified


async def test_temporary_credentials_verify_with_their_session_token() -> None:
    async with FakeBedrock(session_token="FwoGZXIvYXdzEXAMPLE", region="eu-central-1") as fake:
        client = bedrock_client(fake, aws_session_token="FwoGZXIvYXdzEXAMPLE", region_name="eu-central-1")
        await converse(client)
        without_token = bedrock_client(fake, region_name="eu-central-1")
        err = await client_error(lambda: without_token.converse(modelId=MODEL_ID, messages=USER))
    assert code_of(err) == "UnrecognizedClientException"
    assert [c.verified for c in fake.calls] == [True, False]
    assert "x-amz-security-token" in fake.calls[0].headers["authorization"]


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)], ids=["past", "future"])
async def test_a_signature_made_too_far_from_now_is_refused(
    fake: FakeBedrock, client: Client, skew: timedelta
) -> None:
    signed_at = datetime.now(UTC) + skew
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
        err = await client_error(lambda: client.converse(modelId=MODEL_ID, messages=USER))
    assert code_of(err) == "InvalidSignatureException"
    assert err.response["Error"]["Message"].startswith(
        "Signature expired" if skew < timedelta(0) else "Signature not yet current"
    )
    with mock.patch(
        "botocore.auth.get_current_datetime", return_value=datetime.now(UTC) - timedelta(minutes=4)
    ):
        await converse(client)
    assert [c.verified for c in fake.calls] == [False, True]


def sign(url: str, body: bytes, secret: str = SECRET_ACCESS_KEY) -> dict[str, str]:
    """The headers botocore's signer adds to a POST of `body` to `url`."""
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY_ID, secret), "bedrock", REGION).add_auth(request)
    return dict(request.headers.items())


async def test_an_aiohttp_request_signed_by_botocore_verifies_only_as_signed(fake: FakeBedrock) -> None:
    """What an adapter on aiohttp must do: send the path exactly as signed (yarl would decode the
    model id's %3A), and the body exactly as signed."""
    url = f"{fake.base_url}/model/{MODEL_ID.replace(':', '%3A')}/converse"
    body = json.dumps({"messages": USER}).encode()
    answers = []
    async with aiohttp.ClientSession() as session:
        for target, data in [
            (URL(url, encoded=True), body),
            (URL(url), body),  # the path sent as /…v1:0/…, not as signed
            (URL(url, encoded=True), body.replace(b"Oslo", b"Bergen")),
        ]:
            async with session.post(target, data=data, headers=sign(url, body)) as response:
                answers.append((response.status, response.headers.get("x-amzn-ErrorType", "").split(":")[0]))
    assert answers == [(200, ""), (403, "InvalidSignatureException"), (403, "InvalidSignatureException")]
    assert [c.verified for c in fake.calls] == [True, False, False]
    assert {c.model_id for c in fake.calls} == {MODEL_ID}


API_KEY = "ABSKQmVkcm9ja0FQSUtleS1FWEFNUExF"


async def test_a_bedrock_api_key_is_accepted_as_a_bearer_token(fake: FakeBedrock) -> None:
    """boto3 sends API keys (AWS_BEARER_TOKEN_BEDROCK) over HTTPS only, so plain requests here."""
    path = f"/model/{MODEL_ID.replace(':', '%3A')}/converse"
    async with FakeBedrock(api_key=API_KEY) as keyed, aiohttp.ClientSession() as session:
        answers = []
        # the key; a wrong key; the key at a fake that was given none
        for server, key in [(keyed, API_KEY), (keyed, "ABSKd3Jvbmcta2V5"), (fake, API_KEY)]:
            headers = {"Authorization": f"Bearer {key}"}
            url = URL(server.base_url + path, encoded=True)
            async with session.post(url, json={"messages": USER}, headers=headers) as response:
                kind = response.headers.get("x-amzn-ErrorType", "").split(":")[0]
                answers.append((response.status, kind, await response.json()))
    assert answers[0][:2] == (200, "")
    assert answers[0][2]["output"]["message"]["content"] == USER[0]["content"]
    refused = (
        403,
        "AccessDeniedException",
        {"Message": "Authentication failed: Please make sure your API Key is valid."},
    )
    assert answers[1:] == [refused, refused]
    assert [(c.scheme, c.verified) for c in [*keyed.calls, *fake.calls]] == [
        ("bearer", True),
        ("bearer", False),
        ("bearer", False),
    ]


# --- Frames -------------------------------------------------------------------------------------

# AWS's event-stream test vectors, as botocore's own decoder tests carry them.
KNOWN_ANSWERS = [
    (Frame({}, b""), b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff"),
    (
        Frame({"integer": -1}, b""),
        b"\x00\x00\x00\x1d\x00\x00\x00\r\x83\xe3\xf0\xe7\x07integer\x04\xff\xff\xff\xff\x8b\x8e\x12\xeb",
    ),
    (Frame({}, b"{'foo':'bar'}"), b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96"),
    (
        Frame({"content-type": "application/json"}, b"{'foo':'bar'}"),
        b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10application/json"
        b"{'foo':'bar'}\x8d\x9c\x08\xb1",
    ),
    (
        Frame({":message-type": "error", ":error-code": "code", ":error-message": "message"}, b""),
        b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e\x0d:message-type\x07\x00\x05error"
        b"\x0b:error-code\x07\x00\x04code\x0e:error-message\x07\x00\x07message\x6b\x6c\xea\x3d",
    ),
]


@pytest.mark.parametrize(
    ("frame", "expected"), KNOWN_ANSWERS, ids=["empty", "int32", "payload", "string", "error"]
)
def test_the_encoder_writes_the_known_answers(frame: Frame, expected: bytes) -> None:
    assert encode_frame(frame) == expected


FRAMES = [
    message_start(),
    text_delta(0, "Sunny ☀"),
    event("contentBlockDelta", {"delta": {"text": "x"}, "contentBlockIndex": 0}, pad=False),
    exception_frame("throttlingException", "Too many requests, please wait before trying again."),
    error_frame("InternalFailure", "The stream failed."),
    Frame({"flag": True, "off": False, "n": 7, "blob": b"\x00\x01", "s": "é"}, b"\xff"),
]


def test_botocores_decoder_reads_the_frames_back_split_anywhere() -> None:
    data = stream_bytes(FRAMES)
    for step in (1, 2, 7, len(data)):
        buffer = EventStreamBuffer()
        decoded = []
        for start in range(0, len(data), step):
            buffer.add_data(data[start : start + step])
            decoded += list(buffer)
        assert [(dict(m.headers), m.payload) for m in decoded] == [
            (dict(f.headers), f.payload) for f in FRAMES
        ]


def test_events_carry_bedrocks_headers_and_padding() -> None:
    [message] = list(_decoded(text_delta(2, "Hi")))
    assert message.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    body = json.loads(message.payload)
    assert body.pop("p").startswith("a")
    assert body == {"delta": {"text": "Hi"}, "contentBlockIndex": 2}
    [exception] = list(_decoded(exception_frame("throttlingException", "Slow down")))
    assert exception.headers[":message-type"] == "exception"
    assert exception.headers[":exception-type"] == "throttlingException"
    assert json.loads(exception.payload) == {"message": "Slow down"}


def _decoded(frame: Frame) -> EventStreamBuffer:
    buffer = EventStreamBuffer()
    buffer.add_data(encode_frame(frame))
    return buffer
