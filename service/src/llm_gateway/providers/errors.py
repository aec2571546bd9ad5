"""Upstream failures as gateway errors, shared by every HTTP adapter.

HTTP status mapping (AIP-193 codes): 400/422 -> INVALID_ARGUMENT; 401 -> FAILED_PRECONDITION (the
gateway's provider key is wrong: an operator must act); 403 -> PERMISSION_DENIED; 404 -> NOT_FOUND;
408 -> DEADLINE_EXCEEDED; 402 (out of credit) -> RESOURCE_EXHAUSTED; 429 -> RESOURCE_EXHAUSTED
with the provider's Retry-After; 5xx, 529 and connection failures -> UNAVAILABLE; timeouts ->
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import aiohttp

from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.untrusted import MAX_MESSAGE, Scrubber


class UpstreamContext:
    """Who an upstream error concerns, and the scrubber every piece of upstream text in it passes
    through (the provider's key, whole or in pieces, and anything credential-shaped)."""

    __slots__ = ("model", "provider", "scrubber")

    def __init__(self, provider: str, model: str, scrubber: Scrubber | Sequence[str] = ()) -> None:
        self.provider = provider
        self.model = model
        self.scrubber = scrubber if isinstance(scrubber, Scrubber) else Scrubber(scrubber)

    def error(
        self,
        message: str,
        *,
        code: Code,
        reason: str,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> GatewayError:
        """A gateway error about this provider. `message` and the values of `extra` may hold
        upstream text: the message is scrubbed, and an extra value that is not a plain identifier
        once scrubbed is left out."""
        metadata = {"provider": self.provider, "model": self.model}
        for key, value in (extra or {}).items():
            cleaned = self.scrubber.code(value)
            if cleaned:
                metadata[key] = cleaned
        if status is not None:
            metadata["upstream_status"] = str(status)
        return GatewayError(
            self.scrubber.text(message),
            code=code,
            reason=reason,
            metadata=metadata,
            retry_after=retry_after,
            retryable=retryable,
        )


def http_error(ctx: UpstreamContext, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """The gateway error for an upstream HTTP error reply."""
    detail, upstream_code = _error_detail(body)
    google_retry, google_reasons = _google_details(body)
    # AWS names the error in a header ("ThrottlingException:http://internal.amazon.com/...").
    aws_type = (headers.get("x-amzn-ErrorType") or "").partition(":")[0]
    upstream_code = upstream_code or aws_type
    extra = {"upstream_code": upstream_code} if upstream_code else {}
    where = f"provider {ctx.provider!r} (HTTP {status})"
    # Google answers a wrong API key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID; AWS a
    # wrong or expired signature with 403.
    key_rejected = (
        status == 401
        or (status == 400 and "API_KEY_INVALID" in google_reasons)
        or aws_type in _AWS_AUTH_ERRORS
    )
    if status in (400, 413, 422) and not key_rejected:
        return ctx.error(
            f"{where} rejected the request: {detail}",
            code=Code.INVALID_ARGUMENT,
            reason="UPSTREAM_INVALID_REQUEST",
            status=status,
            extra=extra,
        )
    if key_rejected:
        if aws_type in _AWS_AUTH_ERRORS:
            fix = f"providers.{ctx.provider}'s AWS credentials"
        elif any(r.startswith("ACCESS_TOKEN") or r == "CREDENTIALS_MISSING" for r in google_reasons):
            fix = f"providers.{ctx.provider}'s Google credentials"
        else:
            fix = f"providers.{ctx.provider}.api_key"
        return ctx.error(
            f"{where} rejected the gateway's credentials for this provider; an operator must fix {fix}",
            code=Code.FAILED_PRECONDITION,
            reason="PROVIDER_AUTH_FAILED",
            status=status,
            extra=extra,
        )
    if status == 403:
        return ctx.error(
            f"{where} denied the gateway access to {ctx.model}: {detail}",
            code=Code.PERMISSION_DENIED,
            reason="PROVIDER_PERMISSION_DENIED",
            status=status,
            extra=extra,
        )
    if status == 404:
        return ctx.error(
            f"{where} does not know {ctx.model}: {detail}",
            code=Code.NOT_FOUND,
            reason="UPSTREAM_NOT_FOUND",
            status=status,
            extra=extra,
        )
    if status == 408:
        return ctx.error(
            f"{where} timed out: {detail}",
            code=Code.DEADLINE_EXCEEDED,
            reason="UPSTREAM_TIMEOUT",
            status=status,
            retryable=True,
            extra=extra,
        )
    if status == 429:
        if upstream_code == "insufficient_quota":
            return ctx.error(
                f"{where}: the gateway's account is out of quota: {detail}",
                code=Code.RESOURCE_EXHAUSTED,
                reason="UPSTREAM_QUOTA_EXCEEDED",
                status=status,
                extra=extra,
            )
        return ctx.error(
            f"{where} is rate limiting the gateway: {detail}",
            code=Code.RESOURCE_EXHAUSTED,
            reason="UPSTREAM_RATE_LIMITED",
            status=status,
            retry_after=_first(parse_retry_after(headers), google_retry),
            retryable=True,
            extra=extra,
        )
    if status == 402:  # Cohere: the account hit its billing limit; retrying cannot help
        return ctx.error(
            f"{where}: the gateway's account is out of credit: {detail}",
            code=Code.RESOURCE_EXHAUSTED,
            reason="UPSTREAM_QUOTA_EXCEEDED",
            status=status,
            extra=extra,
        )
    return ctx.error(
        f"{where} failed: {detail}",
        code=Code.UNAVAILABLE,
        reason="UPSTREAM_UNAVAILABLE",
        status=status,
        retry_after=_first(parse_retry_after(headers), google_retry),
        retryable=True,
        extra=extra,
    )


_AWS_AUTH_ERRORS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    }
)


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def bad_response(ctx: UpstreamContext, what: str) -> GatewayError:
    return ctx.error(
        f"provider {ctx.provider!r} sent a malformed response: {what}",
        code=Code.UNAVAILABLE,
        reason="UPSTREAM_BAD_RESPONSE",
        retryable=True,
    )


def stream_interrupted(ctx: UpstreamContext) -> GatewayError:
    return ctx.error(
        f"provider {ctx.provider!r} ended the stream before it finished",
        code=Code.UNAVAILABLE,
        reason="UPSTREAM_STREAM_INTERRUPTED",
        retryable=True,
    )


@contextmanager
def stream_body_errors(ctx: UpstreamContext) -> Iterator[None]:
    """Around reading a stream's body: a connection lost after the headers is an interrupted
    stream, not an unreachable provider."""
    try:
        yield
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        raise stream_interrupted(ctx) from None


@contextmanager
def upstream_errors(ctx: UpstreamContext) -> Iterator[None]:
    """Maps transport failures and unparseable bodies to gateway errors. Cancellation passes."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError:
        raise ctx.error(
            f"could not connect to provider {ctx.provider!r} in time",
            code=Code.UNAVAILABLE,
            reason="UPSTREAM_UNAVAILABLE",
            retryable=True,
        ) from None
    except aiohttp.ServerTimeoutError as exc:
        raise ctx.error(
            f"provider {ctx.provider!r} timed out ({type(exc).__name__})",
            code=Code.DEADLINE_EXCEEDED,
            reason="UPSTREAM_TIMEOUT",
            retryable=True,
        ) from None
    except aiohttp.ClientError as exc:
        raise ctx.error(
            f"connection to provider {ctx.provider!r} failed ({type(exc).__name__})",
            code=Code.UNAVAILABLE,
            reason="UPSTREAM_UNAVAILABLE",
            retryable=True,
        ) from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        # json.JSONDecodeError is a ValueError; the others come from bodies of the wrong shape.
        raise bad_response(ctx, f"{type(exc).__name__}: {exc}") from None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _error_detail(body: bytes) -> tuple[str, str]:
    """The message and code from a JSON error body ({"error": {"message", "code"|"type"}}), or text."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or "(empty body)", ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        if not isinstance(code, str) or not code:  # Google: "code" is the HTTP status, "status" the name
            code = error.get("status") or error.get("type") or code or ""
        return str(error.get("message") or "(no message)"), str(code)
    if isinstance(error, str):
        return error, ""
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"], ""
    return json.dumps(data)[:MAX_MESSAGE], ""


def _google_details(body: bytes) -> tuple[float | None, frozenset[str]]:
    """The RetryInfo delay ("37s") and ErrorInfo reasons of a Google error body's `details`."""
    try:
        details = json.loads(body)["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return None, frozenset()
    delay: float | None = None
    reasons = set()
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type") or "")
        if kind.endswith("google.rpc.RetryInfo"):
            with suppress(ValueError):  # a google.protobuf.Duration: "37s", "0.5s"
                delay = max(float(str(detail.get("retryDelay") or "").removesuffix("s")), 0.0)
        elif kind.endswith("google.rpc.ErrorInfo") and detail.get("reason"):
            reasons.add(str(detail["reason"]))
    return delay, frozenset(reasons)
