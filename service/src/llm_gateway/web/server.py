"""The HTTP door: aiohttp.web on the gRPC server's own event loop and process, its own port.

Routes (each also under `/api/v1/...`, as the seed documents write them):

    POST /v1/chat/completions   OpenAI's Chat Completions, unary and `stream: true` (SSE)
    GET  /v1/models             OpenAI's model list, with capabilities, prices and live state
    GET  /v1/models/{id}        one model
    GET  /health                liveness, with each provider's circuit and recent latency
    GET  /ready                 readiness: 503 while draining or while every circuit is open
    POST /api/v1/batches ...    batches (`web/batches.py`)

A call goes through the same edge as a gRPC call (`llm_gateway.edge`: request id, gateway key,
drain) and the same core, so it is limited, budgeted, recorded and observed alike; this module
only decodes and encodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from importlib import metadata
from typing import Any, TypeVar

from aiohttp import web

from llm_gateway.budgets.trailers import call_headers, stream_headers
from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.errors import Code, GatewayError, deadline_exceeded, invalid_field
from llm_gateway.edge import REQUEST_ID_HEADER, KeyCheck, cut_off, deadline, request_id
from llm_gateway.gateway import StreamFinished, StreamStarted
from llm_gateway.gateway.breaker import CircuitState
from llm_gateway.gateway.core import GroupView
from llm_gateway.gateway.record import CallTracker, Principal
from llm_gateway.gateway.scope import CallScope
from llm_gateway.metrics import CONTENT_TYPE, Metrics
from llm_gateway.pricing import PricingStatus, format_decimal
from llm_gateway.runtime import Runtime
from llm_gateway.web import anthropic
from llm_gateway.web import openai_response as out
from llm_gateway.web.batches import BatchRoutes
from llm_gateway.web.console_files import ConsoleRoutes
from llm_gateway.web.dialects import ANTHROPIC, OPENAI, Dialect
from llm_gateway.web.rpc import RpcRoutes, json_services

_log = logging.getLogger("llm_gateway.http")
try:
    _VERSION = metadata.version("llm-gateway")
except metadata.PackageNotFoundError:  # run from a source tree without installing
    _VERSION = "0+unknown"
# The unsupported-parameter policy for clients that cannot add to the body ("strict" or "lenient").
POLICY_HEADER = "x-unsupported-parameters"
# The caller's deadline, in seconds from when the request arrives (HTTP has no grpc-timeout).
TIMEOUT_HEADER = "x-request-timeout"
_JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")


class HttpDoor:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._gateway = runtime.gateway
        self._keys = KeyCheck(runtime.principals.digests) if runtime.principals.enabled else None
        self._providers = list(runtime.config.providers)
        self._started = time.time()
        self._runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application(client_max_size=runtime.config.server.max_message_bytes)
        for prefix in ("", "/api"):
            app.router.add_post(f"{prefix}/v1/chat/completions", self.chat_completions)
            app.router.add_get(f"{prefix}/v1/models", self.models)
            app.router.add_get(f"{prefix}/v1/models/{{model_id:.+}}", self.model)
            app.router.add_post(f"{prefix}/v1/messages", self.messages)
            app.router.add_post(f"{prefix}/v1/messages/count_tokens", self.count_tokens)
        for prefix in ("", "/api/v1"):
            app.router.add_get(f"{prefix}/health", self.health)
            app.router.add_get(f"{prefix}/ready", self.ready)
        if runtime.metrics is not None and runtime.config.metrics.port is None:
            app.router.add_get("/metrics", self.metrics)
        BatchRoutes(runtime.batch_book, self._providers, self._who, self._refused).add_to(app)
        RpcRoutes(self._gateway, json_services(runtime), self._who, self._refused).add_to(app)
        ConsoleRoutes().add_to(app)
        self.app = app

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        # handler_cancellation: a client that goes away cancels its handler, which closes the
        # upstream request, as a gRPC cancel does.
        runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await runner.setup()
        listening = listening_socket(host, port, reuse_port=reuse_port)
        await web.SockSite(runner, listening, backlog=BACKLOG).start()
        self._runner = runner
        self.port = listening.getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- chat completions ---------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, OPENAI)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, ANTHROPIC)

    async def count_tokens(self, request: web.Request) -> web.Response:
        """Anthropic's `count_tokens`: the prompt's size for the model, as the gateway counts it."""
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        principal, refusal = self._who(request)
        try:
            if refusal is not None:
                raise refusal
            body = await _json_body(request)
            if isinstance(body, dict):
                body = {**body, "max_tokens": body.get("max_tokens", 1)}
            decoded = anthropic.decode(body, self._providers)
            estimates = await self._gateway.estimate_cost(decoded.chat, None, (), principal)
        except GatewayError as err:
            return _error_response(ANTHROPIC, err, rid)
        return web.json_response(
            {"input_tokens": estimates[0].prompt_tokens}, headers={REQUEST_ID_HEADER: rid}
        )

    async def _call(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        received = time.perf_counter()
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        drain = self._runtime.drain
        principal, refused = self._who(request)
        refusal = drain.refusal() or refused
        route = request.match_info.route.resource
        tracker = self._gateway.open_call(
            "Chat",
            rid,
            principal,
            received,
            door="http",
            route=route.canonical if route else request.path,
            traceparent=request.headers.get("traceparent"),
        )
        if refusal is not None:
            return self._failed(dialect, tracker, refusal, rid)
        task = drain.enter()
        try:
            return await self._chat(request, dialect, tracker, rid, received)
        except GatewayError as err:
            return self._failed(dialect, tracker, err, rid)
        except asyncio.CancelledError as cancelled:
            ended = cut_off(cancelled, tracker)
            if ended is None:  # the client went away
                tracker.end("CANCELLED")
                raise
            return self._failed(dialect, tracker, ended, rid)
        except Exception:
            _log.exception("unexpected error")
            internal = GatewayError(
                f"internal error; quote request id {rid}", code=Code.INTERNAL, reason="INTERNAL"
            )
            return self._failed(dialect, tracker, internal, rid)
        finally:
            drain.exit(task)

    async def _chat(
        self, request: web.Request, dialect: Dialect, tracker: CallTracker, rid: str, received: float
    ) -> web.StreamResponse:
        until = deadline(request.headers.get(TIMEOUT_HEADER), TIMEOUT_HEADER)
        body = await _json_body(request)
        policy = request.headers.get(POLICY_HEADER)
        if policy is not None and dialect is OPENAI and isinstance(body, dict):
            body.setdefault("unsupported_parameters", policy.strip().lower())
        chat, stream, encoder = dialect.decode(body, self._providers)
        scope = CallScope(
            request_id=rid, received_at=received, deadline=until, principal=tracker.principal, call=tracker
        )
        if not stream:
            outcome = await _within(until, self._gateway.chat(chat, scope))
            headers = {
                REQUEST_ID_HEADER: rid,
                **dict(call_headers(self._gateway.budgets, outcome.header.id, outcome.summary)),
            }
            reply = web.Response(body=json.dumps(encoder.reply(outcome)), content_type=_JSON, headers=headers)
            try:  # sent before the observers run, so the access log and the ledger add no latency
                await reply.prepare(request)
                await reply.write_eof()
            finally:
                tracker.end("OK")  # the upstream call succeeded and is charged, delivered or not
            return reply
        tracker.operation, tracker.streamed = "ChatStream", True
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", REQUEST_ID_HEADER: rid}
        )
        events = self._gateway.chat_stream(chat, scope)
        try:
            # The core bounds a stream's start by the deadline; this bounds the rest of it.
            async with asyncio.timeout_at(until) as limit:
                async for event in events:
                    if isinstance(event, StreamStarted):
                        response.headers.extend(stream_headers(self._gateway.budgets, event.header.id))
                        await response.prepare(request)  # errors before the first event are plain JSON
                        chunks = encoder.start(event.header)
                    elif isinstance(event, StreamFinished):
                        chunks = encoder.finish(event.summary)
                    else:
                        chunks = encoder.delta(event)
                    for chunk in chunks:
                        await response.write(chunk)
        except (GatewayError, TimeoutError, asyncio.CancelledError) as caught:
            if isinstance(caught, GatewayError):
                err: GatewayError | None = caught
            elif isinstance(caught, TimeoutError):
                err = deadline_exceeded() if limit.expired() else None
            else:
                err = cut_off(caught, tracker)
            if err is None:
                raise
            if not response.prepared:
                raise err from None
            # After the first event the status is sent: the error is the stream's last event.
            tracker.fail(err)
            await response.write(encoder.error(err, rid))
            tracker.end()
            return response
        finally:
            await events.aclose()
        for chunk in encoder.end():
            await response.write(chunk)
        await response.write_eof()
        tracker.end("OK")
        return response

    def _failed(self, dialect: Dialect, tracker: CallTracker, err: GatewayError, rid: str) -> web.Response:
        tracker.fail(err)
        tracker.end()
        return _error_response(dialect, err, rid)

    # -- models, health -------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        principal, refusal = self._who(request)
        if refusal is not None:
            return self._refused(refusal, request)
        listed = self._gateway.list_models(principal=principal)
        groups = self._gateway.list_groups(principal=principal)
        if self._gateway.subscriptions is not None:
            await self._gateway.subscriptions.refresh()
        data = [self._model(spec) for spec in listed] + [self._group(group) for group in groups]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        principal, refusal = self._who(request)
        if refusal is not None:
            return self._refused(refusal, request)
        wanted = request.match_info["model_id"]
        if self._gateway.subscriptions is not None:
            await self._gateway.subscriptions.refresh()
        for spec in self._gateway.list_models(principal=principal):
            if wanted in (spec.id, *self._gateway.catalog.aliases_of(spec.id)):
                return web.json_response(self._model(spec))
        for group in self._gateway.list_groups(principal=principal):
            if wanted == group.name:
                return web.json_response(self._group(group))
        err = GatewayError(
            f"unknown model {wanted!r}; GET /v1/models lists them",
            code=Code.NOT_FOUND,
            reason="MODEL_NOT_FOUND",
            metadata={"field": "model", "model": wanted},
        )
        return self._refused(err, request)

    def _model(self, spec: ModelSpec) -> dict[str, Any]:
        meter = self._gateway.subscriptions
        standing = None if meter is None else meter.standing(spec.provider)
        # A plan's models show what tokens past its quota cost.
        sheet = spec.price if standing is None else standing.plan.prices(spec.price)
        pricing: dict[str, Any] = {"status": sheet.status.value, "currency": sheet.currency}
        if sheet.status is PricingStatus.PRICED:
            for name, rate in (("input_per_million", sheet.input), ("output_per_million", sheet.output)):
                if rate is not None:
                    pricing[name] = format_decimal(rate.base)
        if standing is not None:
            pricing["billing_model"] = "subscription"
            pricing["subscription"] = {
                "fee": format_decimal(standing.plan.fee),
                "period": standing.plan.period.value,
                "included_tokens": standing.plan.included_tokens,
                "period_start": standing.period.start.isoformat(),
                "period_end": standing.period.end.isoformat(),
                "used_tokens": standing.tokens,
                "calls": standing.calls,
            }
        return {
            "id": spec.id,
            "object": "model",
            "created": 0,
            "owned_by": spec.provider,
            "provider": spec.provider,
            "display_name": spec.display_name,
            "aliases": self._gateway.catalog.aliases_of(spec.id),
            "groups": self._gateway.catalog.groups_of(spec.id),
            "context_window": spec.context_window,
            "max_output_tokens": spec.max_output_tokens,
            "capabilities": sorted(spec.capabilities or ()),
            "pricing": pricing,
            "state": self._state(spec),
        }

    def _state(self, spec: ModelSpec) -> dict[str, Any]:
        breaker = self._gateway.breakers[spec.provider]
        live = self._gateway.live.of(spec.id)
        return {
            "circuit": breaker.state.value,
            "available": breaker.available,
            "latency_p50_ms": out.ms(live.latency_p50),
            "recent_calls": live.recent_calls,
            "in_flight": self._gateway.in_flight.of(spec.id),
        }

    def _group(self, group: GroupView) -> dict[str, Any]:
        """A model group, listed beside the models: callers use its name as `model`."""
        return {
            "id": group.name,
            "object": "model",
            "created": 0,
            "owned_by": "llm-gateway",
            "type": "group",
            "policy": group.policy,
            "deployments": [
                {
                    "model": deployment.model,
                    "weight": deployment.weight,
                    "enabled": spec is not None,
                    **({"state": self._state(spec)} if spec is not None else {}),
                }
                for deployment, spec in group.deployments
            ],
        }

    async def metrics(self, request: web.Request) -> web.Response:
        assert self._runtime.metrics is not None
        return await scrape(self._runtime.metrics)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self._health("healthy"))

    async def ready(self, request: web.Request) -> web.Response:
        breakers = self._gateway.breakers
        all_open = bool(breakers) and all(b.state is CircuitState.OPEN for b in breakers.values())
        draining = self._runtime.drain.draining
        ready = not draining and not all_open
        body = self._health("ready" if ready else "not_ready")
        body["ready"] = ready
        if not ready:
            body["reason"] = "draining" if draining else "every provider's circuit is open"
        return web.json_response(body, status=200 if ready else 503)

    def _health(self, status: str) -> dict[str, Any]:
        providers = {}
        for name, breaker in sorted(self._gateway.breakers.items()):
            latencies = [
                lat
                for spec in self._gateway.catalog.listed()
                if spec.provider == name and (lat := self._gateway.live.of(spec.id).latency_p50) is not None
            ]
            providers[name] = {
                "status": _provider_status(breaker.state, breaker.available),
                "circuit": breaker.state.value,
                "latency_ms": out.ms(min(latencies)) if latencies else None,
            }
        return {
            "status": status,
            "version": _VERSION,
            "uptime_ms": int((time.time() - self._started) * 1000),
            "providers": providers,
        }

    def _who(self, request: web.Request) -> tuple[Principal, GatewayError | None]:
        """Who presents the request's key, and its refusal when the key is missing or wrong (then
        who is the unknown caller, as the record of a refused call says)."""
        if self._keys is None:
            return self._runtime.principals.of(""), None
        try:
            key = self._keys.name_of(request.headers.get("authorization"), request.headers.get("x-api-key"))
        except GatewayError as refused:
            return self._runtime.principals.of(""), refused
        return self._runtime.principals.of(key), None

    def _refused(self, err: GatewayError, request: web.Request) -> web.Response:
        return _error_response(OPENAI, err, request_id(request.headers.get(REQUEST_ID_HEADER)))


async def scrape(metrics: Metrics) -> web.Response:
    """Prometheus's scrape: every worker's values (read from their files off the event loop)."""
    text = await asyncio.to_thread(metrics.exposition)
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})


class MetricsDoor:
    """`GET /metrics` on a port of its own (`metrics.port`), apart from the API doors."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _scrape(self, request: web.Request) -> web.Response:
        return await scrape(self._metrics)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        listening = listening_socket(host, port, reuse_port=reuse_port)
        await web.SockSite(runner, listening, backlog=BACKLOG).start()
        self._runner, self.port = runner, listening.getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _provider_status(state: CircuitState, available: bool) -> str:
    if state is CircuitState.CLOSED:
        return "healthy"
    return "degraded" if available else "unhealthy"


# The queue of connections waiting to be accepted (asyncio listens again with the site's value, and
# the kernel caps it at net.core.somaxconn): thousands of callers may connect at once, and a full
# queue drops their connections. asyncio also accepts up to this many per wake-up.
BACKLOG = 4096


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound socket for `host` ("[::]": every address, IPv4 and IPv6 on one socket and one port,
    as the gRPC server binds it; IPv4 alone where the machine has no IPv6)."""
    wildcard = host in ("[::]", "::", "")
    name = "::" if wildcard else host.strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    # Created as TCP by number: asyncio sets TCP_NODELAY on accepted connections only then.
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError:
        if not wildcard:
            raise
        family, name = socket.AF_INET, "0.0.0.0"
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and wildcard:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((name, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read(), parse_float=Decimal)
    except ValueError:
        raise invalid_field("", "the body is not JSON") from None


async def _within(until: float | None, step: Awaitable[_T]) -> _T:
    """`step`, cut off (DEADLINE_EXCEEDED) when the caller's deadline passes."""
    if until is None:
        return await step
    try:
        async with asyncio.timeout_at(until) as limit:
            return await step
    except TimeoutError:
        if not limit.expired():
            raise
        raise deadline_exceeded() from None


def _error_response(dialect: Dialect, err: GatewayError, rid: str) -> web.Response:
    status, body = dialect.error(err, rid)
    headers = {REQUEST_ID_HEADER: rid}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(err.retry_after)))
    return web.Response(status=status, body=json.dumps(body), content_type=_JSON, headers=headers)
