"""A fake Google Vertex AI server on loopback, speaking the real wire format, with Google's OAuth2
token endpoint beside it.

It serves:

- `POST /token`, as `https://oauth2.googleapis.com/token`: the JWT-bearer grant of a service
  account (the assertion's RS256 signature verified with the public half of the key the fake made,
  its `kid`, `iss`, `aud`, `iat`/`exp` and `scope` or `target_audience` checked) and the
  refresh-token grant of an authorized user (application-default credentials from `gcloud auth
  application-default login`). Each exchange mints a fresh access token that lives `expires_in`
  seconds (an ID token for `target_audience`); errors are OAuth2's `{"error", "error_description"}`.
- Gemini: `POST /{v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/models/
  {model}:generateContent` and `:streamGenerateContent` (`?alt=sse` for SSE, else one JSON array),
  the Gemini API's bodies and chunks (tests/fakes/gemini.py).
- Claude: `.../publishers/anthropic/models/{model}:rawPredict` (a Messages JSON reply) and
  `:streamRawPredict` (Anthropic's SSE events, tests/fakes/anthropic.py). The body must carry
  `anthropic_version` "vertex-2023-10-16" and no `model` (the URL names it), else 400.

The regional hosts (`https://{location}-aiplatform.googleapis.com`) and the global one
(`https://aiplatform.googleapis.com`, `locations/global`) differ only in the host, so all are this
one loopback server and the location is read from the path.

Every model call must carry `Authorization: Bearer <token>` for an access token the fake minted,
not expired, with the cloud-platform scope, for a project the fake serves; else Google's error body
(401 UNAUTHENTICATED, 403 PERMISSION_DENIED) with its ErrorInfo reason. Refused calls use up no
scripted reply. Replies are scripted per publisher (a gemini.Reply or anthropic.Reply, or Vertex's
own error from `error_reply`) or, when nothing is scripted, an echo of the last user turn's text.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes import anthropic as claude
from tests.fakes import gemini
from tests.fakes.server import FakeServer, Recorded, last_user_text, words

PROJECT = "llm-gateway-test"
LOCATION = "us-east5"
GEMINI_MODEL = "gemini-2.5-flash"
CLAUDE_MODEL = "claude-sonnet-4-5@20250929"
ANTHROPIC_VERSION = "vertex-2023-10-16"  # the only `anthropic_version` Vertex takes in a body
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# The audience google-auth puts in every assertion, whatever the key file's token_uri says.
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SERVICE_ACCOUNT_EMAIL = f"gateway@{PROJECT}.iam.gserviceaccount.com"
SERVICE_ACCOUNT_CLIENT_ID = "103958221475912345678"
# An authorized user's OAuth client and refresh token (application-default credentials).
CLIENT_ID = "32555940559-fake0test0client.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-fake-client-secret"
REFRESH_TOKEN = "1//0gFakeRefreshTokenForTheGatewayTests"
# What `gcloud auth application-default login` asks the user to grant.
USER_SCOPES = frozenset(
    {
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        CLOUD_PLATFORM,
        "https://www.googleapis.com/auth/sqlservice.login",
    }
)
# How far an assertion's iat may be ahead of the fake's clock, and the longest lifetime it may ask.
CLOCK_SKEW = 60
MAX_ASSERTION_LIFETIME = 3600

Publisher = Literal["google", "anthropic"]
Reply = gemini.Reply | claude.Reply

_MODEL_PATH = "/{version:v1|v1beta1}/projects/{project}/locations/{location}/publishers"
ROUTES = (
    "/token",
    _MODEL_PATH + "/google/models/{model}:generateContent",
    _MODEL_PATH + "/google/models/{model}:streamGenerateContent",
    _MODEL_PATH + "/anthropic/models/{model}:rawPredict",
    _MODEL_PATH + "/anthropic/models/{model}:streamRawPredict",
)

_SEE = "See https://developers.google.com/identity/sign-in/web/devconsole-project."
MISSING_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login "
    f"cookie or other valid authentication credential. {_SEE}"
)
INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
    f"other valid authentication credential. {_SEE}"
)
INSUFFICIENT_SCOPES = "Request had insufficient authentication scopes."
_BAD_TIMES = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check "
    "your iat and exp values in the JWT claim."
)
# The RPC each custom method is, as Google names it in ErrorInfo metadata.
_RPC = {
    "generateContent": "google.cloud.aiplatform.v1.PredictionService.GenerateContent",
    "streamGenerateContent": "google.cloud.aiplatform.v1.PredictionService.StreamGenerateContent",
    "rawPredict": "google.cloud.aiplatform.v1.PredictionService.RawPredict",
    "streamRawPredict": "google.cloud.aiplatform.v1.PredictionService.StreamRawPredict",
}

_dumps = partial(json.dumps, separators=(",", ":"))


@dataclass
class Call(Recorded):
    """A model call as the fake saw it (`method` is the HTTP method, `api_method` Vertex's)."""

    version: str = ""  # "v1" or "v1beta1"
    project: str = ""
    location: str = ""
    publisher: str = ""  # "google" or "anthropic"
    model: str = ""
    api_method: str = ""  # generateContent, streamGenerateContent, rawPredict, streamRawPredict
    token: str | None = None  # the bearer token it carried
    # Why the fake refused it before any model saw it: the ErrorInfo reason of an authentication
    # refusal (e.g. ACCESS_TOKEN_EXPIRED), or the body check that failed (e.g. ANTHROPIC_VERSION).
    refused: str | None = None


@dataclass
class Token:
    """An access token the fake minted."""

    value: str
    grant: str  # "jwt-bearer" or "refresh_token"
    subject: str  # the service account's email, or the OAuth client id
    scopes: frozenset[str]
    expires_at: float  # time.time()


@dataclass
class Exchange:
    """A request to the token endpoint: its form, the assertion's header and claims (JWT-bearer),
    and the token minted or the OAuth2 error it was refused with."""

    grant_type: str
    form: dict[str, str]
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    token: str | None = None  # the access token (or ID token) minted
    error: str | None = None  # e.g. "invalid_grant"
    error_description: str | None = None


class TokenError(Exception):
    """A refusal of the token endpoint: an OAuth2 error code and description."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status


# --- Keys and JWTs ------------------------------------------------------------------------------


def new_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key, as a service account's keys are (2048 bits)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def _default_key() -> rsa.RSAPrivateKey:
    return new_key()  # one per process: making a key takes a noticeable fraction of a second


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def jwt_encode(key: rsa.RSAPrivateKey, claims: dict[str, Any], *, kid: str | None = None) -> str:
    """A compact RS256 JWT of `claims` signed with `key`, as google-auth makes its assertions."""
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{_b64url(_dumps(header).encode())}.{_b64url(_dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def jwt_verify(token: str, public_key: rsa.RSAPublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of an RS256 JWT whose signature `public_key` verifies (ValueError
    otherwise)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"Invalid JWT: expected 3 parts but got {len(parts)}")
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except ValueError as err:
        raise ValueError("Invalid JWT: not base64url-encoded JSON") from err
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("Invalid JWT: not base64url-encoded JSON")
    if header.get("alg") != "RS256":
        raise ValueError("Invalid JWT Signature.")
    try:
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as err:
        raise ValueError("Invalid JWT Signature.") from err
    return header, claims


# --- Bodies -------------------------------------------------------------------------------------


def error_body(
    status: str,
    message: str,
    *,
    reason: str | None = None,
    rpc: str | None = None,
    retry_delay: str | None = None,
) -> dict[str, Any]:
    """Google's error body, as Vertex sends it: its ErrorInfo (when `reason` is given) names
    aiplatform.googleapis.com and the RPC."""
    body = gemini.error_body(status, message, reason=reason, retry_delay=retry_delay)
    for detail in body["error"].get("details", []):
        if detail["@type"].endswith("ErrorInfo"):
            detail["metadata"] = {"service": "aiplatform.googleapis.com"}
            if rpc is not None:
                detail["metadata"]["method"] = rpc
    return body


def error_reply(
    status: str,
    message: str,
    *,
    reason: str | None = None,
    retry_delay: str | None = None,
    headers: dict[str, str] | None = None,
) -> gemini.Reply:
    """A Vertex error in Google's body, with the HTTP status of `status` (gemini.ERROR_STATUS):
    RESOURCE_EXHAUSTED 429, INVALID_ARGUMENT 400, PERMISSION_DENIED 403, NOT_FOUND 404,
    UNAVAILABLE 503... Script it for either publisher (Vertex answers these for Claude too)."""
    return gemini.Reply(
        status=gemini.ERROR_STATUS[status],
        json_body=error_body(status, message, reason=reason, retry_delay=retry_delay),
        headers=dict(headers or {}),
    )


# --- Server -------------------------------------------------------------------------------------


class FakeVertex(FakeServer[Reply]):
    """Vertex AI for `projects`, and the token endpoint for its service account (whose key is
    `key`, one made per process unless given) and its authorized user."""

    def __init__(
        self,
        *,
        projects: tuple[str, ...] = (PROJECT,),
        key: rsa.RSAPrivateKey | None = None,
        client_email: str = SERVICE_ACCOUNT_EMAIL,
        expires_in: int = 3600,
        anthropic_versions: tuple[str, ...] = (ANTHROPIC_VERSION,),
    ) -> None:
        super().__init__(ROUTES)
        self.projects = projects
        self.key = key if key is not None else _default_key()
        self.key_id = secrets.token_hex(20)
        self.client_email = client_email
        # The lifetime of the tokens minted from now on; below 225 s (google-auth's refresh margin)
        # a google-auth client exchanges again before every call.
        self.expires_in = expires_in
        self.anthropic_versions = anthropic_versions
        self.calls: list[Call] = []  # the same requests as `requests`, with what the fake made of them
        self.exchanges: list[Exchange] = []
        self.tokens: dict[str, Token] = {}
        self._scripts: dict[Publisher, deque[Reply]] = {"google": deque(), "anthropic": deque()}

    @property
    def base_url(self) -> str:
        """The endpoint of every location: clients append `/v1/projects/...` (the Anthropic SDK's
        base_url is this plus `/v1`, as it appends `/projects/...`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def token_exchanges(self) -> int:
        """Tokens minted so far."""
        return sum(1 for e in self.exchanges if e.token is not None)

    def script(self, *replies: Reply, publisher: Publisher | None = None) -> None:
        """Queues replies for the next calls to `publisher`'s models; by default an anthropic.Reply
        goes to Claude's and any other to Gemini's."""
        for reply in replies:
            target = publisher or ("anthropic" if isinstance(reply, claude.Reply) else "google")
            self._scripts[target].append(reply)

    def pending(self, publisher: Publisher | None = None) -> int:
        if publisher is not None:
            return len(self._scripts[publisher])
        return sum(len(s) for s in self._scripts.values())

    def expire(self, token: str | None = None) -> None:
        """Makes `token` (every token, if None) expired now, as time would."""
        for value, minted in self.tokens.items():
            if token is None or value == token:
                minted.expires_at = 0.0

    # --- Credential files ---

    def service_account_info(self, project: str | None = None) -> dict[str, Any]:
        """A service-account key as the console downloads it, its token_uri this fake's."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {
            "type": "service_account",
            "project_id": project or self.projects[0],
            "private_key_id": self.key_id,
            "private_key": pem.decode(),
            "client_email": self.client_email,
            "client_id": SERVICE_ACCOUNT_CLIENT_ID,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            + self.client_email.replace("@", "%40"),
            "universe_domain": "googleapis.com",
        }

    def service_account_file(self, path: Path, project: str | None = None) -> Path:
        path.write_text(json.dumps(self.service_account_info(project), indent=2))
        return path

    def authorized_user_file(self, path: Path, quota_project: str | None = None) -> Path:
        """Application-default credentials as `gcloud auth application-default login` writes them.
        The file names no token URI: google-auth sends its refresh to Google's unless a client
        overrides it (`Credentials.with_token_uri(fake.token_uri)`)."""
        info = {
            "account": "",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
            "type": "authorized_user",
            "universe_domain": "googleapis.com",
        }
        if quota_project is not None:
            info["quota_project_id"] = quota_project
        path.write_text(json.dumps(info, indent=2))
        return path

    # --- Requests ---

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/token":
            return await self._token(request)
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        info = request.match_info
        api_method = request.path.rsplit(":", 1)[-1]
        publisher: Publisher = "anthropic" if api_method in ("rawPredict", "streamRawPredict") else "google"
        authorization = request.headers.get("Authorization", "")
        call = Call(
            request.method,
            request.path,
            {k.lower(): v for k, v in request.headers.items()},
            body if isinstance(body, dict) else {},
            dict(request.query),
            version=info["version"],
            project=info["project"],
            location=info["location"],
            publisher=publisher,
            model=info["model"],
            api_method=api_method,
            token=authorization[7:] if authorization.startswith("Bearer ") else None,
        )
        self.calls.append(call)
        self.requests.append(call)
        self._arrived.set()
        refusal = self._authorize(call, authorization) or self._validate(call, body, raw)
        if refusal is not None:  # refused before any model sees it: no scripted reply is used up
            return await self._reply(request, refusal)
        script = self._scripts[publisher]
        reply = script.popleft() if script else self._echo_for(call)
        return await self._reply(request, reply)

    def _authorize(self, call: Call, authorization: str) -> Reply | None:
        rpc = _RPC[call.api_method]
        if not authorization:
            return self._refuse(call, "UNAUTHENTICATED", MISSING_CREDENTIALS, "CREDENTIALS_MISSING", rpc)
        minted = self.tokens.get(call.token or "")
        if minted is None:
            return self._refuse(
                call, "UNAUTHENTICATED", INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED", rpc
            )
        if minted.expires_at <= time.time():
            return self._refuse(call, "UNAUTHENTICATED", INVALID_CREDENTIALS, "ACCESS_TOKEN_EXPIRED", rpc)
        if CLOUD_PLATFORM not in minted.scopes:
            return self._refuse(
                call, "PERMISSION_DENIED", INSUFFICIENT_SCOPES, "ACCESS_TOKEN_SCOPE_INSUFFICIENT", rpc
            )
        if call.project not in self.projects:
            resource = (
                f"//aiplatform.googleapis.com/projects/{call.project}/locations/{call.location}"
                f"/publishers/{call.publisher}/models/{call.model}"
            )
            message = (
                f"Permission 'aiplatform.endpoints.predict' denied on resource '{resource}' "
                "(or it may not exist)."
            )
            return self._refuse(call, "PERMISSION_DENIED", message, "IAM_PERMISSION_DENIED", rpc)
        return None

    def _refuse(self, call: Call, status: str, message: str, reason: str, rpc: str) -> Reply:
        call.refused = reason
        headers = {}
        if status == "UNAUTHENTICATED":
            headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
        return gemini.Reply(
            status=gemini.ERROR_STATUS[status],
            json_body=error_body(status, message, reason=reason, rpc=rpc),
            headers=headers,
        )

    def _validate(self, call: Call, body: Any, raw: bytes) -> Reply | None:
        if not isinstance(body, dict):
            call.refused = "INVALID_JSON"
            snippet = raw[:20].decode(errors="replace")
            return error_reply(
                "INVALID_ARGUMENT", f"Invalid JSON payload received. Unexpected token.\n{snippet}"
            )
        if call.publisher == "google":
            contents = body.get("contents")
            if not contents:
                call.refused = "EMPTY_CONTENTS"
                return error_reply(
                    "INVALID_ARGUMENT",
                    "Unable to submit request because it has an empty contents field. Add a contents "
                    "field and try again.",
                )
            if any(not isinstance(c, dict) or c.get("role") not in ("user", "model") for c in contents):
                call.refused = "INVALID_ROLE"  # Vertex, unlike the Gemini API, has no default role
                return error_reply("INVALID_ARGUMENT", "Please use a valid role: user, model.")
            return None
        # Claude's own checks, behind Vertex: its error body, not Google's.
        if "model" in body:
            call.refused = "MODEL_IN_BODY"
            return claude.error_reply("invalid_request_error", "model: Extra inputs are not permitted")
        version = body.get("anthropic_version")
        if version not in self.anthropic_versions:
            call.refused = "ANTHROPIC_VERSION"
            if version is None:
                return claude.error_reply("invalid_request_error", "anthropic_version: Field required")
            expected = " or ".join(f"'{v}'" for v in self.anthropic_versions)
            return claude.error_reply(
                "invalid_request_error", f"anthropic_version: Input should be {expected}"
            )
        return None

    # --- The token endpoint ---

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if request.content_type == "application/json":
            data = await request.json()
            form = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        else:
            form = {k: str(v) for k, v in (await request.post()).items()}
        exchange = Exchange(grant_type=form.get("grant_type", ""), form=form)
        self.exchanges.append(exchange)
        try:
            if exchange.grant_type == JWT_BEARER:
                answer = self._jwt_grant(exchange)
            elif exchange.grant_type == "refresh_token":
                answer = self._refresh_grant(exchange)
            else:
                raise TokenError("unsupported_grant_type", f"Invalid grant_type: {exchange.grant_type}")
        except TokenError as err:
            exchange.error, exchange.error_description = err.error, err.description
            answer, status = {"error": err.error, "error_description": err.description}, err.status
        else:
            status = 200
        headers = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"}
        return web.json_response(answer, status=status, headers=headers, dumps=_dumps)

    def _jwt_grant(self, exchange: Exchange) -> dict[str, Any]:
        try:
            header, claims = jwt_verify(exchange.form.get("assertion", ""), self.key.public_key())
        except ValueError as err:
            raise TokenError("invalid_grant", str(err)) from None
        exchange.header, exchange.claims = header, claims
        if header.get("kid", self.key_id) != self.key_id:  # no key of the account has that id
            raise TokenError("invalid_grant", "Invalid JWT Signature.")
        if claims.get("iss") != self.client_email:
            raise TokenError("invalid_grant", "Invalid grant: account not found")
        if claims.get("sub", self.client_email) != self.client_email:  # domain-wide delegation
            raise TokenError(
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not "
                "authorized for any of the scopes requested.",
                401,
            )
        if claims.get("aud") not in (GOOGLE_TOKEN_URI, self.token_uri):
            raise TokenError(
                "invalid_grant",
                f"Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URI}",
            )
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or iat > now + CLOCK_SKEW
            or exp <= now - CLOCK_SKEW
            or exp - iat > MAX_ASSERTION_LIFETIME
        ):
            raise TokenError("invalid_grant", _BAD_TIMES)
        scope, audience = claims.get("scope"), claims.get("target_audience")
        if isinstance(audience, str) and audience:
            id_token = self._id_token(audience, now)
            exchange.token = id_token
            return {"id_token": id_token}
        if not isinstance(scope, str) or not scope.split():
            raise TokenError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token = self._mint("jwt-bearer", self.client_email, frozenset(scope.split()), now)
        exchange.token = token.value
        return {"access_token": token.value, "expires_in": self.expires_in, "token_type": "Bearer"}

    def _refresh_grant(self, exchange: Exchange) -> dict[str, Any]:
        form = exchange.form
        if form.get("client_id") != CLIENT_ID:
            raise TokenError("invalid_client", "The OAuth client was not found.", 401)
        if form.get("client_secret") != CLIENT_SECRET:
            raise TokenError("invalid_client", "Unauthorized", 401)
        if form.get("refresh_token") != REFRESH_TOKEN:
            raise TokenError("invalid_grant", "Bad Request")
        requested = frozenset(form.get("scope", "").split()) or USER_SCOPES
        if not requested <= USER_SCOPES:
            raise TokenError("invalid_scope", "Bad Request")
        token = self._mint("refresh_token", CLIENT_ID, requested, time.time())
        exchange.token = token.value
        return {
            "access_token": token.value,
            "expires_in": self.expires_in,
            "scope": " ".join(sorted(requested)),
            "token_type": "Bearer",
        }

    def _mint(self, grant: str, subject: str, scopes: frozenset[str], now: float) -> Token:
        value = f"ya29.fake{len(self.tokens)}.{secrets.token_urlsafe(32)}"
        token = Token(value, grant, subject, scopes, now + self.expires_in)
        self.tokens[value] = token
        return token

    def _id_token(self, audience: str, now: float) -> str:
        """An OpenID Connect ID token for the service account, signed with its key (Google's are
        signed with Google's; the fake has only this one)."""
        claims = {
            "aud": audience,
            "azp": self.client_email,
            "email": self.client_email,
            "email_verified": True,
            "exp": int(now) + self.expires_in,
            "iat": int(now),
            "iss": "https://accounts.google.com",
            "sub": SERVICE_ACCOUNT_CLIENT_ID,
        }
        return jwt_encode(self.key, claims, kid=self.key_id)

    # --- Replies ---

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        if isinstance(reply, claude.Reply):
            return await self._reply_claude(request, reply)
        if reply.chunks is None or not request.path.endswith(":streamGenerateContent"):
            if reply.json_body is None and reply.chunks is not None:
                raise AssertionError("a scripted stream reply for a unary request")
            return web.json_response(
                reply.json_body, status=reply.status, headers=reply.headers, dumps=_dumps
            )
        if request.query.get("alt") != "sse":  # without alt=sse Google streams one JSON array
            array = ",".join(c if isinstance(c, str) else _dumps(c) for c in reply.chunks)
            headers = {"Content-Type": "application/json; charset=UTF-8", **reply.headers}
            return web.Response(status=reply.status, body=f"[{array}]".encode(), headers=headers)
        response = web.StreamResponse(
            status=reply.status,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **reply.headers},
        )
        frames = (gemini.sse_bytes([chunk]) for chunk in reply.chunks)
        return await self._stream(request, response, frames, chunk_delay=reply.chunk_delay, drop=reply.drop)

    async def _reply_claude(self, request: web.Request, reply: claude.Reply) -> web.StreamResponse:
        if reply.events is None:
            return web.json_response(
                reply.json_body, status=reply.status, headers=reply.headers, dumps=_dumps
            )
        response = web.StreamResponse(
            status=reply.status,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **reply.headers,
            },
        )
        events = list(reply.events)
        if reply.end_early:  # no stop reason, no final usage, no message_stop: the connection drops
            cut = next(
                (i for i, e in enumerate(events) if e[0] in ("message_delta", "message_stop")), len(events)
            )
            events = events[:cut]
        frames = (claude.sse_bytes([event]) for event in events)
        return await self._stream(
            request, response, frames, chunk_delay=reply.chunk_delay, drop=reply.end_early
        )

    def _echo(self, body: dict[str, Any]) -> Reply:
        raise AssertionError("replies are chosen per call, in _handle")

    def _echo_for(self, call: Call) -> Reply:
        if call.publisher == "google":
            text = gemini.last_user_text(call.body)
            use = gemini.usage_metadata(10, max(len(text) // 4, 1))
            return gemini.Reply(
                json_body=gemini.text_response(text, use), chunks=gemini.text_chunks(words(text), use)
            )
        text = last_user_text(call.body)
        usage = claude.usage(10, max(len(text) // 4, 1))
        if call.api_method == "streamRawPredict":
            return claude.Reply(events=claude.text_events(words(text), usage))
        message = claude.message([claude.text_block(text)], usage_=usage, model=call.model.replace("@", "-"))
        return claude.Reply(json_body=message)
