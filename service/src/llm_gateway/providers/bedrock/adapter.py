"""AWS Bedrock's Converse API: `POST {endpoint}/model/{modelId}/converse`, and `converse-stream`
for streams in AWS's binary event-stream framing.

Requests are signed with SigV4 by botocore's signer over the gateway's own HTTP client (botocore
never sends anything itself, so nothing blocks the event loop), or carry a Bedrock API key as a
bearer token. Credentials come from the config (`access_key_id`, `secret_access_key`,
`session_token`, filled from the standard AWS variables by the embedded defaults), or from a named
`profile` through botocore's resolver, which runs in a worker thread: at the first call, and again
whenever temporary credentials near their expiry. ConverseStream's frames are decoded, their
CRCs checked, by botocore's `EventStreamBuffer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore.exceptions
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage
from yarl import URL

from llm_gateway import json_codec
from llm_gateway.config.schema import BedrockProviderConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.adapter import HttpAdapter
from llm_gateway.providers.base import OptionRules, UpstreamCall
from llm_gateway.providers.bedrock.mapping import EventDecoder, build_body, parse_response
from llm_gateway.providers.errors import UpstreamContext, stream_interrupted, upstream_errors
from llm_gateway.providers.http import post_bytes, post_json

# Exceptions inside a stream that a later attempt may not meet.
_RETRYABLE_STREAM_ERRORS = frozenset(
    {
        "throttlingException",
        "serviceUnavailableException",
        "internalServerException",
        "modelStreamErrorException",
    }
)


class BedrockProvider(HttpAdapter):
    option_rules = OptionRules(
        frozenset({"messages", "system", "inferenceConfig", "toolConfig", "outputConfig", "modelId"})
    )

    def __init__(self, name: str, config: BedrockProviderConfig, http: aiohttp.ClientSession) -> None:
        secrets = [
            s.get_secret_value()
            for s in (config.secret_access_key, config.session_token, config.api_key)
            if s
        ]
        super().__init__(name, http, {}, secrets, config.timeout)
        self._region = config.region
        base = str(config.endpoint_url or f"https://bedrock-runtime.{config.region}.amazonaws.com")
        self._models_url = f"{base.rstrip('/')}/model/"
        self._prompt_caching = config.prompt_caching
        self._bearer = config.api_key.get_secret_value() if config.api_key else ""
        self._credentials: Credentials | None = None
        if config.access_key_id and config.secret_access_key:
            token = config.session_token.get_secret_value() if config.session_token else None
            self._credentials = Credentials(
                config.access_key_id.get_secret_value(), config.secret_access_key.get_secret_value(), token
            )
        self._profile = config.profile
        self._resolving = asyncio.Lock()

    def _url(self, call: UpstreamCall, *, stream: bool) -> str:
        # Quoted whole (an inference profile's id has ':'), as botocore quotes it.
        model = quote(call.model.name, safe="")
        return f"{self._models_url}{model}/{'converse-stream' if stream else 'converse'}"

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        return build_body(call, prompt_caching=self._prompt_caching)

    def _parse(self, reply: Any) -> Completion:
        return parse_response(reply)

    async def _signed(self, url: str, content: bytes) -> dict[str, str]:
        """The request's headers: a bearer key, or a SigV4 signature of exactly these bytes."""
        headers = {"Content-Type": "application/json"}
        if self._bearer:
            return {**headers, "Authorization": f"Bearer {self._bearer}"}
        request = AWSRequest(method="POST", url=url, data=content, headers=headers)
        SigV4Auth(await self._frozen(), "bedrock", self._region).add_auth(request)
        return dict(request.headers.items())

    async def _frozen(self) -> ReadOnlyCredentials:
        """The credentials to sign with now. Static ones at once; a profile's resolved (and
        temporary ones refreshed) in a worker thread, since botocore's resolver does blocking
        file and network I/O."""
        credentials = self._credentials
        if credentials is not None and not _needs_refresh(credentials):
            return credentials.get_frozen_credentials()
        async with self._resolving:
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(_resolve, self._profile)
            resolved: Credentials = self._credentials
            try:
                return await asyncio.to_thread(resolved.get_frozen_credentials)
            except botocore.exceptions.BotoCoreError as exc:  # an SSO session ended, a role refused
                raise _unreadable(exc) from None

    async def chat(self, call: UpstreamCall) -> Completion:
        ctx = self._context(call)
        url = self._url(call, stream=False)
        content = self._encode(call, stream=False)
        headers = await self._signed(url, content)
        reply = await post_json(
            self._http, URL(url, encoded=True), content, headers=headers, timeouts=self._timeout, ctx=ctx
        )
        with upstream_errors(ctx):
            return self._parse(reply)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        url = self._url(call, stream=True)
        content = self._encode(call, stream=True)
        headers = await self._signed(url, content)
        decoder = EventDecoder()
        frames = EventStreamBuffer()
        body = post_bytes(
            self._http, URL(url, encoded=True), content, headers=headers, timeouts=self._timeout, ctx=ctx
        )
        async with aclosing(body) as chunks:
            with upstream_errors(ctx):
                async for chunk in chunks:
                    frames.add_data(chunk)
                    for message in frames:
                        for event in decoder.feed(*self._event(ctx, message)):
                            yield event
        if not decoder.finished:
            raise stream_interrupted(ctx)
        yield decoder.done()

    def _event(self, ctx: UpstreamContext, message: EventStreamMessage) -> tuple[str, dict[str, Any]]:
        """An event's type and payload; an exception frame raises."""
        headers = message.headers
        payload: dict[str, Any] = json_codec.loads(message.payload) if message.payload else {}
        if headers.get(":message-type") == "event":
            return str(headers.get(":event-type") or ""), payload
        kind = str(headers.get(":exception-type") or headers.get(":error-code") or "error")
        detail = str(
            payload.get("message") or payload.get("Message") or headers.get(":error-message") or kind
        )
        raise self._stream_error(ctx, detail, kind=kind, retryable=kind in _RETRYABLE_STREAM_ERRORS)


def _needs_refresh(credentials: Credentials) -> bool:
    return isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed()


def _resolve(profile: str | None) -> Credentials:
    """botocore's credential chain for `profile` (its environment variables, shared files, SSO,
    container and instance roles)."""
    try:
        found = botocore.session.Session(profile=profile).get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise _unreadable(exc) from None
    if found is None:
        raise GatewayError(
            f"no AWS credentials found for profile {profile!r}" if profile else "no AWS credentials found",
            code=Code.FAILED_PRECONDITION,
            reason="PROVIDER_AUTH_FAILED",
        )
    return found


def _unreadable(exc: Exception) -> GatewayError:
    return GatewayError(
        f"AWS credentials could not be read or refreshed ({type(exc).__name__}); an operator must fix "
        "the provider's profile or keys",
        code=Code.FAILED_PRECONDITION,
        reason="PROVIDER_AUTH_FAILED",
    )
