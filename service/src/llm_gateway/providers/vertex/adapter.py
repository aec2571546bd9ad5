"""Google Vertex AI: Gemini (`…/publishers/google/models/{model}:generateContent`, and
`:streamGenerateContent?alt=sse`) with the Gemini adapter's mapping, and Anthropic's Claude
(`…/publishers/anthropic/models/{model}:rawPredict` and `:streamRawPredict`) with the Anthropic
adapter's mapping, its body carrying `anthropic_version: vertex-2023-10-16` and no `model`.

Every request carries an OAuth2 access token from google-auth: a service-account key file or an
authorized-user file (`credentials_file`), else application-default credentials. google-auth's
refresh is a blocking HTTP exchange, so it runs in a worker thread, once at a time; a token that
nears its expiry is refreshed in the background while calls go on with it, so no call waits for a
refresh unless the token has run out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import google.auth
import google.auth.exceptions
import google.auth.transport.requests
from google.auth.credentials import Credentials
from google.oauth2 import credentials as user
from google.oauth2 import service_account

from llm_gateway.config.schema import AnthropicProviderConfig, GeminiProviderConfig, VertexProviderConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.base import OptionRules, UpstreamCall
from llm_gateway.providers.gemini import GeminiProvider

_log = logging.getLogger("llm_gateway.providers")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ANTHROPIC_VERSION = "vertex-2023-10-16"
# A token with less left than this is not sent: the call waits for a fresh one.
_MARGIN = dt.timedelta(seconds=30)


class AccessTokens:
    """The provider's access token, refreshed in a worker thread."""

    def __init__(self, credentials_file: str | None) -> None:
        self._file = credentials_file
        self._credentials: Credentials | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    async def token(self) -> str:
        credentials = self._credentials
        if credentials is not None and credentials.token and _left(credentials) > _MARGIN:
            # google-auth counts a token as expired minutes before it is: renew it meanwhile.
            if credentials.expired and self._background is None:
                self._background = asyncio.create_task(self._renew_meanwhile())
            return str(credentials.token)
        await self._renew()
        assert self._credentials is not None
        return str(self._credentials.token)

    async def _renew(self) -> None:
        try:
            async with self._lock:
                credentials = self._credentials
                if credentials is None:
                    credentials = self._credentials = await asyncio.to_thread(_load, self._file)
                elif credentials.token and not credentials.expired:
                    return  # another call renewed it while this one waited
                await asyncio.to_thread(credentials.refresh, google.auth.transport.requests.Request())
        except google.auth.exceptions.TransportError as exc:
            raise GatewayError(
                f"Google's token endpoint could not be reached: {type(exc).__name__}",
                code=Code.UNAVAILABLE,
                reason="UPSTREAM_UNAVAILABLE",
                retryable=True,
            ) from None
        except (google.auth.exceptions.GoogleAuthError, OSError, ValueError) as exc:
            what = (
                str(exc)[:200]
                if isinstance(exc, google.auth.exceptions.GoogleAuthError)
                else type(exc).__name__
            )
            raise GatewayError(
                f"the gateway has no usable credentials for Vertex AI ({what}); an operator must fix the "
                "provider's credentials_file or application-default credentials",
                code=Code.FAILED_PRECONDITION,
                reason="PROVIDER_AUTH_FAILED",
            ) from None
        finally:
            if asyncio.current_task() is self._background:
                self._background = None

    async def _renew_meanwhile(self) -> None:
        """A renewal no call waits for: its failure is logged, and the next call that needs a
        token tries again."""
        try:
            await self._renew()
        except GatewayError as err:
            _log.warning(
                {"event": "vertex_token_refresh_failed", "reason": err.reason, "detail": err.message}
            )

    def forget(self) -> None:
        """Drops the token Google refused (revoked, or expired by Google's clock): the next call
        gets a new one."""
        if self._credentials is not None:
            self._credentials.token = None

    async def aclose(self) -> None:
        if self._background is not None:
            self._background.cancel()


def _load(credentials_file: str | None) -> Credentials:
    """A service-account key or an authorized user's file (the two kinds a file may hold here),
    else application-default credentials."""
    if not credentials_file:
        credentials: Credentials = google.auth.default(scopes=SCOPES)[0]
        return credentials
    kind = json.loads(Path(credentials_file).read_text()).get("type")
    if kind == "service_account":
        load = service_account.Credentials.from_service_account_file
        found: Credentials = load(credentials_file, scopes=SCOPES)  # type: ignore[no-untyped-call]
        return found
    if kind == "authorized_user":
        from_file = user.Credentials.from_authorized_user_file
        found = from_file(credentials_file, scopes=SCOPES)  # type: ignore[no-untyped-call]
        return found
    why = f"{credentials_file} holds {kind!r} credentials, not a service-account key or an authorized user's"
    raise google.auth.exceptions.DefaultCredentialsError(why)  # type: ignore[no-untyped-call]


def _left(credentials: Credentials) -> dt.timedelta:
    expiry: dt.datetime | None = credentials.expiry  # naive UTC, google-auth's convention
    if expiry is None:  # never expires
        return dt.timedelta.max
    return expiry - dt.datetime.now(dt.UTC).replace(tzinfo=None)


class _GeminiOnVertex(GeminiProvider):
    def __init__(
        self, name: str, config: VertexProviderConfig, http: aiohttp.ClientSession, base: str
    ) -> None:
        super().__init__(name, GeminiProviderConfig(kind="gemini", timeout=config.timeout), http)
        del self._headers["x-goog-api-key"]
        self._models_url = f"{base}/publishers/google/models/"


class _ClaudeOnVertex(AnthropicProvider):
    def __init__(
        self, name: str, config: VertexProviderConfig, http: aiohttp.ClientSession, base: str
    ) -> None:
        anthropic = AnthropicProviderConfig(
            kind="anthropic", timeout=config.timeout, prompt_caching=config.prompt_caching
        )
        super().__init__(name, anthropic, http)
        for header in ("x-api-key", "anthropic-version"):
            del self._headers[header]
        self._models_url = f"{base}/publishers/anthropic/models/"

    def _url(self, call: UpstreamCall, *, stream: bool) -> str:
        model = quote(call.model.name, safe="@")
        return f"{self._models_url}{model}:{'streamRawPredict' if stream else 'rawPredict'}"

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        body = super()._body(call, stream=stream)
        del body["model"]  # Vertex takes it from the URL
        return {"anthropic_version": ANTHROPIC_VERSION, **body}


def is_claude(model: str) -> bool:
    return model.startswith("claude")


class VertexProvider:
    """Claude models (`claude-*`) through Anthropic's publisher, every other model through
    Google's."""

    def __init__(self, name: str, config: VertexProviderConfig, http: aiohttp.ClientSession) -> None:
        self.name = name
        location = config.location
        host = config.base_url or (
            "https://aiplatform.googleapis.com"
            if location == "global"
            else f"https://{location}-aiplatform.googleapis.com"
        )
        base = (
            f"{str(host).rstrip('/')}/v1/projects/{quote(config.project or '', safe='')}/locations/{location}"
        )
        self._tokens = AccessTokens(config.credentials_file)
        self._gemini = _GeminiOnVertex(name, config, http, base)
        self._claude = _ClaudeOnVertex(name, config, http, base)
        gemini, claude = self._gemini.option_rules, self._claude.option_rules
        self.option_rules = OptionRules(gemini.reserved | claude.reserved, gemini.merged)

    def _adapter(self, call: UpstreamCall) -> GeminiProvider | AnthropicProvider:
        return self._claude if is_claude(call.model.name) else self._gemini

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        return self._adapter(call)._body(call, stream=stream)

    async def _authorized(self, call: UpstreamCall) -> GeminiProvider | AnthropicProvider:
        adapter = self._adapter(call)
        adapter._headers["Authorization"] = f"Bearer {await self._tokens.token()}"
        return adapter

    async def chat(self, call: UpstreamCall) -> Completion:
        with self._refused_token():
            return await (await self._authorized(call)).chat(call)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        adapter = await self._authorized(call)
        with self._refused_token():
            async with aclosing(adapter.stream(call)) as events:
                async for event in events:
                    yield event

    @contextmanager
    def _refused_token(self) -> Iterator[None]:
        try:
            yield
        except GatewayError as err:
            if err.reason == "PROVIDER_AUTH_FAILED":
                self._tokens.forget()
            raise

    async def aclose(self) -> None:
        await self._tokens.aclose()
