"""The fake Vertex AI server against the oracles: google-auth exchanges the fake's service-account
key (and an authorized user's refresh token) at its token endpoint, google-genai in Vertex mode and
Anthropic's AsyncAnthropicVertex call Gemini and Claude through it with the tokens minted, and parse
its replies, streams and errors. What Vertex refuses (no token, an expired one, a Claude body with
`model` or without its `anthropic_version`, an assertion signed with another key) the fake refuses."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import google.auth
import pytest
from cryptography.hazmat.primitives import serialization
from google import genai
from google.auth import exceptions as auth_exceptions
from google.auth import jwt as google_jwt
from google.auth.transport.requests import Request
from google.genai import errors, types
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from tests.fakes import anthropic as claude
from tests.fakes import gemini
from tests.fakes.vertex import (
    ANTHROPIC_VERSION,
    CLAUDE_MODEL,
    CLIENT_ID,
    CLOUD_PLATFORM,
    GEMINI_MODEL,
    GOOGLE_TOKEN_URI,
    JWT_BEARER,
    LOCATION,
    PROJECT,
    FakeVertex,
    error_reply,
    jwt_encode,
    new_key,
)

# google-genai subclasses aiohttp's ClientSession, which aiohttp deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

USER: list[anthropic.types.MessageParam] = [{"role": "user", "content": "What is the weather in Oslo?"}]
# AsyncAnthropicVertex fills in `anthropic_version` with the Messages API's own version unless the body
# has one, and Vertex takes only its own.
VERTEX_BODY = {"anthropic_version": ANTHROPIC_VERSION}


@pytest.fixture
async def fake() -> AsyncIterator[FakeVertex]:
    async with FakeVertex() as server:
        yield server


@pytest.fixture
def key_file(fake: FakeVertex, tmp_path: Path) -> Path:
    return fake.service_account_file(tmp_path / "key.json")


@pytest.fixture
def credentials(key_file: Path) -> service_account.Credentials:
    # google-auth's constructors and helpers are not annotated, hence the ignores in this file.
    loaded: service_account.Credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(key_file), scopes=[CLOUD_PLATFORM]
    )
    return loaded


def gemini_client(
    fake: FakeVertex,
    credentials: Any,
    *,
    location: str = LOCATION,
    api_version: str | None = "v1",
    project: str = PROJECT,
) -> genai.client.AsyncClient:
    options = types.HttpOptions(base_url=fake.base_url, api_version=api_version)
    return genai.Client(
        vertexai=True, project=project, location=location, credentials=credentials, http_options=options
    ).aio


@pytest.fixture
async def gemini_sdk(
    fake: FakeVertex, credentials: service_account.Credentials
) -> AsyncIterator[genai.client.AsyncClient]:
    sdk = gemini_client(fake, credentials)
    try:
        yield sdk
    finally:
        await sdk.aclose()


def claude_client(
    fake: FakeVertex, credentials: Any, *, region: str = LOCATION
) -> anthropic.AsyncAnthropicVertex:
    return anthropic.AsyncAnthropicVertex(
        project_id=PROJECT,
        region=region,
        base_url=f"{fake.base_url}/v1",
        credentials=credentials,
        max_retries=0,
    )


@pytest.fixture
async def claude_sdk(
    fake: FakeVertex, credentials: service_account.Credentials
) -> AsyncIterator[anthropic.AsyncAnthropicVertex]:
    sdk = claude_client(fake, credentials)
    try:
        yield sdk
    finally:
        await sdk.close()


def assert_valid_jwt_exchange(fake: FakeVertex, count: int = 1) -> None:
    """`count` exchanges, each a JWT-bearer grant whose assertion verified and minted a token."""
    assert fake.token_exchanges == count
    for exchange in fake.exchanges:
        assert exchange.grant_type == JWT_BEARER
        assert exchange.error is None
        assert exchange.header is not None
        assert exchange.header["kid"] == fake.key_id
        assert exchange.claims is not None
        assert exchange.claims["iss"] == fake.client_email
        assert exchange.claims["aud"] == GOOGLE_TOKEN_URI
        assert exchange.claims["scope"] == CLOUD_PLATFORM
        assert exchange.claims["exp"] - exchange.claims["iat"] == 3600


async def post(
    fake: FakeVertex, path: str, body: Any, token: str | None = None, query: str = ""
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.base_url}{path}{query}", json=body, headers=headers) as response,
    ):
        text = await response.text()
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        return response.status, dict(response.headers), parsed


async def mint(fake: FakeVertex, credentials: Any) -> str:
    await asyncio.to_thread(credentials.refresh, Request())
    token = credentials.token
    assert isinstance(token, str)
    return token


def gemini_path(model: str = GEMINI_MODEL, method: str = "generateContent", project: str = PROJECT) -> str:
    return f"/v1/projects/{project}/locations/{LOCATION}/publishers/google/models/{model}:{method}"


def claude_path(model: str = CLAUDE_MODEL, method: str = "rawPredict") -> str:
    return f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/anthropic/models/{model}:{method}"


def google_error(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict)
    error = body["error"]
    assert isinstance(error, dict)
    return error


# --- The key file and the token endpoint, through google-auth -----------------------------------


def test_google_auth_reads_the_key_file(fake: FakeVertex, credentials: service_account.Credentials) -> None:
    assert credentials.service_account_email == fake.client_email
    assert credentials.project_id == PROJECT
    assert credentials._token_uri == fake.token_uri


async def test_a_service_account_exchanges_a_signed_jwt(
    fake: FakeVertex, credentials: service_account.Credentials
) -> None:
    token = await mint(fake, credentials)
    assert_valid_jwt_exchange(fake)
    assert fake.exchanges[0].token == token
    minted = fake.tokens[token]
    assert (minted.grant, minted.subject, minted.scopes) == (
        "jwt-bearer",
        fake.client_email,
        frozenset({CLOUD_PLATFORM}),
    )
    assert credentials.expiry is not None
    assert not credentials.expired
    # Each exchange mints a fresh token.
    assert await mint(fake, credentials) != token
    assert fake.token_exchanges == 2


async def test_application_default_credentials_from_a_key_file(
    fake: FakeVertex, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    found, project = google.auth.default(scopes=[CLOUD_PLATFORM])
    assert project == PROJECT
    token = await mint(fake, found)
    assert token in fake.tokens
    assert_valid_jwt_exchange(fake)


async def test_the_token_endpoint_refuses_a_jwt_signed_with_another_key(fake: FakeVertex) -> None:
    info = fake.service_account_info()
    info["private_key"] = FakeVertex(key=new_key()).service_account_info()["private_key"]
    impostor = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM])  # type: ignore[no-untyped-call]
    with pytest.raises(auth_exceptions.RefreshError, match="invalid_grant: Invalid JWT Signature"):
        await mint(fake, impostor)
    [exchange] = fake.exchanges
    assert (exchange.error, exchange.token) == ("invalid_grant", None)
    assert fake.token_exchanges == 0
    assert not fake.tokens


def assertion(fake: FakeVertex, *, iat: int = 0, exp: int = 3600, **changes: Any) -> str:
    """A service-account assertion as google-auth makes it, issued `iat` and expiring `exp` seconds
    from now, with `changes` (None drops a claim)."""
    now = int(time.time())
    claims = {
        "iat": now + iat,
        "exp": now + exp,
        "iss": fake.client_email,
        "aud": GOOGLE_TOKEN_URI,
        "scope": CLOUD_PLATFORM,
    }
    claims.update(changes)
    return jwt_encode(fake.key, {k: v for k, v in claims.items() if v is not None}, kid=fake.key_id)


async def token_request(fake: FakeVertex, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(fake.token_uri, data=form) as response:
        body = await response.json()
        assert isinstance(body, dict)
        return response.status, body


@pytest.mark.parametrize(
    ("changes", "error", "description"),
    [
        ({"aud": "https://example.com/token"}, "invalid_grant", "Failed audience check"),
        ({"iss": "someone@else.iam.gserviceaccount.com"}, "invalid_grant", "account not found"),
        ({"iat": -7300, "exp": -3700}, "invalid_grant", "iat and exp"),
        ({"exp": 7200}, "invalid_grant", "short-lived"),
        ({"scope": None}, "invalid_scope", "Invalid OAuth scope"),
    ],
)
async def test_the_token_endpoint_checks_the_claims(
    fake: FakeVertex, changes: dict[str, Any], error: str, description: str
) -> None:
    status, body = await token_request(
        fake, {"grant_type": JWT_BEARER, "assertion": assertion(fake, **changes)}
    )
    assert status == 400
    assert body["error"] == error
    assert description in body["error_description"]
    assert not fake.tokens


async def test_the_token_endpoint_answers_as_google(fake: FakeVertex) -> None:
    fake.expires_in = 120
    status, body = await token_request(fake, {"grant_type": JWT_BEARER, "assertion": assertion(fake)})
    assert status == 200
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert (body["expires_in"], body["token_type"]) == (120, "Bearer")
    status, body = await token_request(fake, {"grant_type": "password"})
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_a_target_audience_gets_an_id_token_not_an_access_token(
    fake: FakeVertex, key_file: Path
) -> None:
    id_credentials = service_account.IDTokenCredentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(key_file), target_audience="https://gateway.example.com"
    )
    token = await mint(fake, id_credentials)
    public_pem = fake.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = google_jwt.decode(token, certs={fake.key_id: public_pem}, audience="https://gateway.example.com")  # type: ignore[no-untyped-call]
    assert claims["email"] == fake.client_email
    assert fake.exchanges[0].claims is not None
    assert fake.exchanges[0].claims["target_audience"] == "https://gateway.example.com"
    status, _, body = await post(
        fake, gemini_path(), {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}, token
    )
    assert status == 401  # Vertex takes access tokens only
    assert google_error(body)["status"] == "UNAUTHENTICATED"


# --- Authorized users (application-default credentials from gcloud) -----------------------------


async def test_an_authorized_user_refreshes_its_token(fake: FakeVertex, tmp_path: Path) -> None:
    path = fake.authorized_user_file(tmp_path / "adc.json", quota_project=PROJECT)
    user = user_credentials.Credentials.from_authorized_user_file(str(path), scopes=[CLOUD_PLATFORM])  # type: ignore[no-untyped-call]
    user = user.with_token_uri(fake.token_uri)  # google-auth sends refreshes to Google's unless told
    token = await mint(fake, user)
    [exchange] = fake.exchanges
    assert exchange.grant_type == "refresh_token"
    assert (exchange.form["client_id"], exchange.form["scope"]) == (CLIENT_ID, CLOUD_PLATFORM)
    assert fake.tokens[token].scopes == {CLOUD_PLATFORM}
    sdk = gemini_client(fake, user)
    try:
        reply = await sdk.models.generate_content(model=GEMINI_MODEL, contents="Hello from a user")
    finally:
        await sdk.aclose()
    assert reply.text == "Hello from a user"
    [call] = fake.calls
    assert call.token == token
    assert call.headers["x-goog-user-project"] == PROJECT


async def test_a_wrong_client_secret_is_refused(fake: FakeVertex, tmp_path: Path) -> None:
    info = json.loads(fake.authorized_user_file(tmp_path / "adc.json").read_text())
    info["client_secret"] = "not-the-secret"
    user = user_credentials.Credentials.from_authorized_user_info(info).with_token_uri(fake.token_uri)  # type: ignore[no-untyped-call]
    with pytest.raises(auth_exceptions.RefreshError, match="invalid_client"):
        await mint(fake, user)
    assert fake.token_exchanges == 0


# --- Gemini on Vertex, through google-genai -----------------------------------------------------


@pytest.mark.parametrize(("location", "api_version"), [(LOCATION, "v1"), ("global", "v1"), (LOCATION, None)])
async def test_genai_generates_content(
    fake: FakeVertex, credentials: service_account.Credentials, location: str, api_version: str | None
) -> None:
    sdk = gemini_client(fake, credentials, location=location, api_version=api_version)
    try:
        reply = await sdk.models.generate_content(model=GEMINI_MODEL, contents="Hello there, Vertex")
    finally:
        await sdk.aclose()
    assert reply.text == "Hello there, Vertex"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata.prompt_token_count == 10
    [call] = fake.calls
    assert (call.project, call.location, call.publisher, call.model, call.api_method) == (
        PROJECT,
        location,
        "google",
        GEMINI_MODEL,
        "generateContent",
    )
    assert call.version == (api_version or "v1beta1")  # the SDK's default in Vertex mode
    assert call.body["contents"] == [{"role": "user", "parts": [{"text": "Hello there, Vertex"}]}]
    assert call.token is not None
    assert call.token in fake.tokens
    assert call.refused is None
    assert_valid_jwt_exchange(fake)


async def test_genai_parses_a_scripted_reply(fake: FakeVertex, gemini_sdk: genai.client.AsyncClient) -> None:
    fake.script(
        gemini.Reply(json_body=gemini.text_response("It is sunny.", gemini.usage_metadata(20, 5, cached=8)))
    )
    reply = await gemini_sdk.models.generate_content(model=GEMINI_MODEL, contents="Weather?")
    assert reply.text == "It is sunny."
    assert reply.response_id == gemini.RESPONSE_ID
    assert reply.usage_metadata is not None
    assert reply.usage_metadata.cached_content_token_count == 8
    assert fake.pending() == 0


async def test_genai_streams(fake: FakeVertex, gemini_sdk: genai.client.AsyncClient) -> None:
    fake.script(
        gemini.Reply(chunks=gemini.text_chunks(["Hello", ", ", "world"], gemini.usage_metadata(25, 3)))
    )
    chunks = [
        c async for c in await gemini_sdk.models.generate_content_stream(model=GEMINI_MODEL, contents="Hi")
    ]
    assert [c.text for c in chunks] == ["Hello", ", ", "world"]
    assert chunks[-1].candidates is not None
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.candidates_token_count == 3
    [call] = fake.calls
    assert (call.api_method, call.query) == ("streamGenerateContent", {"alt": "sse"})
    assert_valid_jwt_exchange(fake)


async def test_genai_streams_the_echo(fake: FakeVertex, gemini_sdk: genai.client.AsyncClient) -> None:
    stream = await gemini_sdk.models.generate_content_stream(model=GEMINI_MODEL, contents="one two three")
    assert "".join([c.text or "" async for c in stream]) == "one two three"


async def test_a_short_lived_token_is_exchanged_again(
    fake: FakeVertex, gemini_sdk: genai.client.AsyncClient
) -> None:
    fake.expires_in = 60  # inside google-auth's refresh margin: every call refreshes first
    for _ in range(2):
        await gemini_sdk.models.generate_content(model=GEMINI_MODEL, contents="Hi")
    assert_valid_jwt_exchange(fake, 2)
    first, second = fake.calls
    assert first.token != second.token
    assert {first.token, second.token} == set(fake.tokens)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("RESOURCE_EXHAUSTED", 429),
        ("INVALID_ARGUMENT", 400),
        ("PERMISSION_DENIED", 403),
        ("NOT_FOUND", 404),
        ("UNAVAILABLE", 503),
    ],
)
async def test_genai_sees_google_errors(
    fake: FakeVertex, gemini_sdk: genai.client.AsyncClient, status: str, code: int
) -> None:
    fake.script(error_reply(status, f"{status} for the test", reason="TEST_REASON", retry_delay="7s"))
    with pytest.raises(errors.APIError) as raised:
        await gemini_sdk.models.generate_content(model=GEMINI_MODEL, contents="Hi")
    assert (raised.value.code, raised.value.status, raised.value.message) == (
        code,
        status,
        f"{status} for the test",
    )
    details = raised.value.details["error"]["details"]
    assert details[0]["metadata"]["service"] == "aiplatform.googleapis.com"
    assert details[1] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}


async def test_an_expired_token_is_refused(fake: FakeVertex, gemini_sdk: genai.client.AsyncClient) -> None:
    await gemini_sdk.models.generate_content(model=GEMINI_MODEL, contents="Hi")
    fake.expire()  # the client still holds its token for an hour
    with pytest.raises(errors.ClientError) as raised:
        await gemini_sdk.models.generate_content(model=GEMINI_MODEL, contents="Hi")
    assert (raised.value.code, raised.value.status) == (401, "UNAUTHENTICATED")
    assert fake.calls[-1].refused == "ACCESS_TOKEN_EXPIRED"
    assert fake.token_exchanges == 1


async def test_a_token_expires_with_time(fake: FakeVertex, credentials: service_account.Credentials) -> None:
    fake.expires_in = 1
    token = await mint(fake, credentials)
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    assert (await post(fake, gemini_path(), body, token))[0] == 200
    await asyncio.sleep(1.05)
    status, headers, reply = await post(fake, gemini_path(), body, token)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    error = google_error(reply)
    assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")
    assert error["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"


@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, "CREDENTIALS_MISSING"), ("ya29.not-minted-here", "ACCESS_TOKEN_TYPE_UNSUPPORTED")],
)
async def test_no_token_or_an_unknown_one_is_refused(
    fake: FakeVertex, token: str | None, reason: str
) -> None:
    fake.script(gemini.Reply(json_body=gemini.text_response("unused")))
    status, _, body = await post(
        fake, gemini_path(), {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}, token
    )
    assert status == 401
    error = google_error(body)
    assert error["status"] == "UNAUTHENTICATED"
    assert error["details"][0]["reason"] == reason
    assert error["details"][0]["metadata"]["method"].endswith("PredictionService.GenerateContent")
    assert fake.pending() == 1  # a refused call uses up no scripted reply


async def test_a_token_without_the_cloud_platform_scope_is_refused(fake: FakeVertex) -> None:
    scope = "https://www.googleapis.com/auth/userinfo.email"
    _, minted = await token_request(
        fake, {"grant_type": JWT_BEARER, "assertion": assertion(fake, scope=scope)}
    )
    status, _, body = await post(
        fake,
        gemini_path(),
        {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
        minted["access_token"],
    )
    assert status == 403
    assert google_error(body)["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"


async def test_another_project_is_refused(fake: FakeVertex, credentials: service_account.Credentials) -> None:
    sdk = gemini_client(fake, credentials, project="someone-elses-project")
    try:
        with pytest.raises(errors.ClientError) as raised:
            await sdk.models.generate_content(model=GEMINI_MODEL, contents="Hi")
    finally:
        await sdk.aclose()
    assert (raised.value.code, raised.value.status) == (403, "PERMISSION_DENIED")
    assert fake.calls[0].refused == "IAM_PERMISSION_DENIED"


async def test_gemini_bodies_need_roles(fake: FakeVertex, credentials: service_account.Credentials) -> None:
    token = await mint(fake, credentials)
    status, _, body = await post(fake, gemini_path(), {"contents": [{"parts": [{"text": "Hi"}]}]}, token)
    assert (status, google_error(body)["status"]) == (400, "INVALID_ARGUMENT")
    assert google_error(body)["message"] == "Please use a valid role: user, model."
    status, _, body = await post(fake, gemini_path(), {"contents": []}, token)
    assert (status, google_error(body)["status"]) == (400, "INVALID_ARGUMENT")


async def test_a_stream_without_alt_sse_is_one_json_array(
    fake: FakeVertex, credentials: service_account.Credentials
) -> None:
    token = await mint(fake, credentials)
    body = {"contents": [{"role": "user", "parts": [{"text": "one two"}]}]}
    status, headers, chunks = await post(fake, gemini_path(method="streamGenerateContent"), body, token)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["one ", "two"]


# --- Claude on Vertex, through AsyncAnthropicVertex ---------------------------------------------


@pytest.mark.parametrize("region", [LOCATION, "global"])
async def test_anthropic_vertex_creates_a_message(
    fake: FakeVertex, credentials: service_account.Credentials, region: str
) -> None:
    sdk = claude_client(fake, credentials, region=region)
    try:
        reply = await sdk.messages.create(
            model=CLAUDE_MODEL, max_tokens=64, messages=USER, extra_body=VERTEX_BODY
        )
    finally:
        await sdk.close()
    assert isinstance(reply.content[0], anthropic.types.TextBlock)
    assert reply.content[0].text == "What is the weather in Oslo?"
    assert (reply.model, reply.stop_reason) == ("claude-sonnet-4-5-20250929", "end_turn")
    [call] = fake.calls
    assert (call.project, call.location, call.publisher, call.model, call.api_method, call.version) == (
        PROJECT,
        region,
        "anthropic",
        CLAUDE_MODEL,
        "rawPredict",
        "v1",
    )
    assert "model" not in call.body
    assert call.body["anthropic_version"] == ANTHROPIC_VERSION
    assert call.token in fake.tokens
    assert_valid_jwt_exchange(fake)


async def test_anthropic_vertex_parses_a_scripted_message(
    fake: FakeVertex, claude_sdk: anthropic.AsyncAnthropicVertex
) -> None:
    block = claude.tool_use_block("toolu_01", "get_weather", {"city": "Oslo"})
    fake.script(
        claude.Reply(json_body=claude.message([block], "tool_use", claude.usage(30, 12, cache_read=20)))
    )
    reply = await claude_sdk.messages.create(
        model=CLAUDE_MODEL, max_tokens=64, messages=USER, extra_body=VERTEX_BODY
    )
    assert isinstance(reply.content[0], anthropic.types.ToolUseBlock)
    assert (reply.content[0].name, reply.content[0].input) == ("get_weather", {"city": "Oslo"})
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.cache_read_input_tokens) == (
        30,
        12,
        20,
    )


async def test_anthropic_vertex_streams(fake: FakeVertex, claude_sdk: anthropic.AsyncAnthropicVertex) -> None:
    fake.script(claude.Reply(events=claude.text_events(["Sunny", " and", " mild"], claude.usage(12, 3))))
    async with claude_sdk.messages.stream(
        model=CLAUDE_MODEL, max_tokens=64, messages=USER, extra_body=VERTEX_BODY
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert texts == ["Sunny", " and", " mild"]
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 12, 3)
    [call] = fake.calls
    assert call.api_method == "streamRawPredict"
    assert call.body["stream"] is True
    assert "model" not in call.body
    assert_valid_jwt_exchange(fake)


async def test_anthropic_vertex_streams_the_echo(
    fake: FakeVertex, claude_sdk: anthropic.AsyncAnthropicVertex
) -> None:
    stream = await claude_sdk.messages.create(
        model=CLAUDE_MODEL, max_tokens=64, messages=USER, stream=True, extra_body=VERTEX_BODY
    )
    kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"


async def test_anthropic_vertex_sees_vertex_and_claude_errors(
    fake: FakeVertex, claude_sdk: anthropic.AsyncAnthropicVertex
) -> None:
    fake.script(error_reply("RESOURCE_EXHAUSTED", "Quota exceeded."), publisher="anthropic")
    fake.script(claude.error_reply("overloaded_error", "Overloaded"))
    with pytest.raises(anthropic.RateLimitError) as quota:
        await claude_sdk.messages.create(
            model=CLAUDE_MODEL, max_tokens=64, messages=USER, extra_body=VERTEX_BODY
        )
    assert quota.value.body == {
        "error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}
    }
    with pytest.raises(anthropic.OverloadedError):
        await claude_sdk.messages.create(
            model=CLAUDE_MODEL, max_tokens=64, messages=USER, extra_body=VERTEX_BODY
        )


async def test_anthropic_vertex_with_application_default_credentials(
    fake: FakeVertex, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    sdk = claude_client(fake, None)
    try:
        await sdk.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER, extra_body=VERTEX_BODY)
    finally:
        await sdk.close()
    assert_valid_jwt_exchange(fake)


async def test_an_expired_token_is_refused_to_claude(
    fake: FakeVertex, credentials: service_account.Credentials
) -> None:
    token = await mint(fake, credentials)
    fake.expire(token)
    sdk = anthropic.AsyncAnthropicVertex(
        project_id=PROJECT, region=LOCATION, base_url=f"{fake.base_url}/v1", access_token=token, max_retries=0
    )
    try:
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.messages.create(
                model=CLAUDE_MODEL, max_tokens=64, messages=USER, extra_body=VERTEX_BODY
            )
    finally:
        await sdk.close()
    assert fake.calls[0].refused == "ACCESS_TOKEN_EXPIRED"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "claude-sonnet-4-5", "anthropic_version": ANTHROPIC_VERSION}, "model: Extra inputs"),
        ({}, "anthropic_version: Field required"),
        ({"anthropic_version": "2023-06-01"}, "anthropic_version: Input should be 'vertex-2023-10-16'"),
    ],
)
async def test_claude_bodies_are_checked(
    fake: FakeVertex, credentials: service_account.Credentials, body: dict[str, Any], message: str
) -> None:
    token = await mint(fake, credentials)
    fake.script(claude.Reply(json_body=claude.message([claude.text_block("unused")])))
    request = {"max_tokens": 64, "messages": USER, **body}
    for method in ("rawPredict", "streamRawPredict"):
        status, _, reply = await post(fake, claude_path(method=method), request, token)
        assert status == 400
        assert isinstance(reply, dict)
        assert reply["error"]["type"] == "invalid_request_error"
        assert message in reply["error"]["message"]
    assert fake.pending() == 1
