"""OpenTelemetry traces of calls, with the GenAI semantic conventions, exported over OTLP.

A call is a SERVER span from the moment its door opens it (its parent: the caller's W3C
`traceparent`, from gRPC metadata or an HTTP header) until the seam ends it; each upstream attempt
is a CLIENT span `chat {model}` beneath it, current while its request is sent so that the request
carries a `traceparent` of its own, and retries and fallbacks are sibling attempt spans. Prompts
and replies are recorded only when the operator opts in (`capture_content`). Off by default: the
call path then pays one attribute check.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llm_gateway.catalog import ModelSpec
from llm_gateway.config.schema import GatewayConfig, TracingConfig
from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import ChatRequest, ImagePart, Message, Role, ToolCall
from llm_gateway.domain.results import FinishReason
from llm_gateway.gateway.record import CallRecord, CallTracker
from llm_gateway.pricing import PricingStatus, format_decimal

_PROPAGATOR = TraceContextTextMapPropagator()
# gen_ai.provider.name for each provider kind (the semantic conventions' well-known values).
_PROVIDER_NAMES = {
    "openai": "openai",
    "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "cohere": "cohere",
    "ollama": "ollama",
}


def enabled(config: TracingConfig, env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return config.enabled or bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def captures_content(config: TracingConfig, env: Mapping[str, str]) -> bool:
    return config.capture_content or (
        env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").lower() == "true"
    )


def _exporter(config: TracingConfig, env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        config.protocol
        or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=config.endpoint, insecure=_insecure(config.endpoint))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    endpoint = config.endpoint
    if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return HttpExporter(endpoint=endpoint)


def _server(base_url: object) -> dict[str, Any]:
    """`server.address` and `server.port` of a provider's base URL (nothing without one)."""
    if not isinstance(base_url, str):
        return {}
    address = urlsplit(base_url)
    found: dict[str, Any] = {}
    if address.hostname:
        found["server.address"] = address.hostname
    if address.port:
        found["server.port"] = address.port
    return found


def _request_attributes(request: ChatRequest) -> dict[str, Any]:
    """The settings the caller asked for, as `gen_ai.request.*` (those left to the provider: none)."""
    generation = request.generation
    found: dict[str, Any] = {}
    for name, value in (
        ("max_tokens", generation.max_tokens),
        ("temperature", generation.temperature),
        ("top_p", generation.top_p),
        ("top_k", generation.top_k),
        ("seed", generation.seed),
        ("presence_penalty", generation.presence_penalty),
        ("frequency_penalty", generation.frequency_penalty),
    ):
        if value is not None:
            found[f"gen_ai.request.{name}"] = value
    if generation.stop:
        found["gen_ai.request.stop_sequences"] = generation.stop
    if request.response_format is not None:
        found["gen_ai.output.type"] = "json"
    return found


def _parts(message: Message) -> list[dict[str, Any]]:
    """A message's parts in the GenAI conventions' JSON shape; an image's bytes are never copied."""
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            if part.url is not None:
                parts.append({"type": "uri", "modality": "image", "uri": part.url})
            else:
                parts.append({"type": "blob", "modality": "image", "mime_type": part.mime_type})
        else:
            parts.append({"type": "text", "content": part.text})
    parts.extend(_tool_call(call) for call in message.tool_calls)
    if message.role is Role.TOOL:
        parts = [{"type": "tool_call_response", "id": message.tool_call_id, "response": message.text()}]
    return parts


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}


def _input_messages(request: ChatRequest) -> dict[str, str]:
    """`gen_ai.system_instructions` and `gen_ai.input.messages`, as JSON text."""
    system = [part for m in request.messages if m.role is Role.SYSTEM for part in _parts(m)]
    others = [
        {"role": m.role.value, "parts": _parts(m)} for m in request.messages if m.role is not Role.SYSTEM
    ]
    found = {"gen_ai.input.messages": json.dumps(others, ensure_ascii=False)}
    if system:
        found["gen_ai.system_instructions"] = json.dumps(system, ensure_ascii=False)
    return found


def _insecure(endpoint: str | None) -> bool | None:
    """A plain-text collector for an http:// endpoint (None: the exporter's own rule)."""
    return None if endpoint is None else urlsplit(endpoint).scheme == "http"


class Tracing:
    """The call observer that opens and ends call spans, and the attempt spans the core asks for."""

    def __init__(
        self,
        provider: TracerProvider,
        provider_kinds: Mapping[str, str],
        base_urls: Mapping[str, str | None],
        *,
        capture_content: bool = False,
    ) -> None:
        self._provider = provider
        self._content = capture_content
        self._tracer = provider.get_tracer("llm_gateway")
        self._kinds = dict(provider_kinds)  # provider name -> its kind
        self._servers = {name: _server(url) for name, url in base_urls.items()}
        self._calls: dict[str, tuple[trace.Span, object]] = {}  # call id -> (span, context token)
        self._served: dict[str, trace.Span] = {}  # call id -> the attempt span that answered

    @classmethod
    def from_config(cls, config: GatewayConfig, env: Mapping[str, str] = os.environ) -> Tracing | None:
        if not enabled(config.tracing, env):
            return None
        provider = TracerProvider(
            resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "llm-gateway")}),
            sampler=ParentBased(TraceIdRatioBased(config.tracing.sample_ratio)),
        )
        provider.add_span_processor(BatchSpanProcessor(_exporter(config.tracing, env)))
        kinds = {name: provider_config.kind for name, provider_config in config.providers.items()}
        urls = {
            name: getattr(p, "base_url", None) or getattr(p, "endpoint", None)
            for name, p in config.providers.items()
        }
        return cls(provider, kinds, urls, capture_content=captures_content(config.tracing, env))

    def flush(self) -> None:
        """Exports every span ended so far (blocking: call it off the event loop)."""
        self._provider.force_flush()

    def shutdown(self) -> None:
        """Exports what is left (the processor's queue) and stops."""
        self._provider.shutdown()

    # -- the call's span (a StartObserver and CallObserver) --------------------------------------

    def call_started(self, tracker: CallTracker) -> None:
        parent = _PROPAGATOR.extract({"traceparent": tracker.traceparent}) if tracker.traceparent else None
        name = (
            f"POST {tracker.route}"
            if tracker.door == "http"
            else tracker.route.lstrip("/") or tracker.operation
        )
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": "chat",
                "llm_gateway.call_id": tracker.id,
                "llm_gateway.request_id": tracker.request_id,
                "llm_gateway.door": tracker.door,
            },
        )
        # Current for the rest of the call's task: attempt spans nest under it, log lines carry it.
        token = context.attach(trace.set_span_in_context(span))
        self._calls[tracker.id] = (span, token)

    def call_ended(self, record: CallRecord) -> None:
        opened = self._calls.pop(record.id, None)
        served = self._served.pop(record.id, None)
        if served is not None:
            self._end_served(served, record)
        if opened is None:
            return
        span, token = opened
        if record.requested_model:
            span.set_attribute("gen_ai.request.model", record.requested_model)
        if record.model:
            span.set_attribute("gen_ai.response.model", record.model)
            span.set_attribute("gen_ai.provider.name", self._provider_name(record.provider))
        self._usage(span, record)
        if record.principal.key:
            span.set_attribute("llm_gateway.api_key_name", record.principal.key)
        if record.task_type:
            span.set_attribute("llm_gateway.task_type", record.task_type)
        if record.fallback_used:
            span.set_attribute("llm_gateway.fallback_used", True)
        if record.status != "OK":
            span.set_attribute("error.type", record.reason or record.status)
            span.set_status(Status(StatusCode.ERROR, record.reason or record.status))
        span.end()
        with contextlib.suppress(ValueError):  # ended in another context than it started in
            context.detach(token)  # type: ignore[arg-type]

    # -- attempts (the core) -----------------------------------------------------------------

    @contextlib.contextmanager
    def attempt(self, call_id: str, spec: ModelSpec, request: ChatRequest) -> Iterator[None]:
        """An upstream attempt's span, current while it runs (its request carries its
        traceparent). Failed: ended with the error; answered: ended with the call."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self._provider_name(spec.provider),
            "gen_ai.request.model": spec.name,
            **self._servers.get(spec.provider, {}),
            **_request_attributes(request),
        }
        if self._content:
            attributes.update(_input_messages(request))
        span = self._tracer.start_span(f"chat {spec.name}", kind=SpanKind.CLIENT, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        try:
            yield
        except GatewayError as err:
            span.set_attribute("error.type", err.reason)
            span.set_status(Status(StatusCode.ERROR, err.reason))
            span.end()
            raise
        except BaseException as err:
            span.set_attribute("error.type", type(err).__name__)
            span.set_status(Status(StatusCode.ERROR, type(err).__name__))
            span.end()
            raise
        else:
            self._served[call_id] = span
        finally:
            context.detach(token)

    def replied(
        self, call_id: str, text: str, tool_calls: Sequence[ToolCall], finish_reason: FinishReason | None
    ) -> None:
        """The reply, on the attempt span that produced it, when the operator opted in."""
        span = self._served.get(call_id)
        if not self._content or span is None:
            return
        parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text else []
        parts.extend(_tool_call(call) for call in tool_calls)
        message = {
            "role": "assistant",
            "parts": parts,
            "finish_reason": finish_reason.value if finish_reason else "",
        }
        span.set_attribute("gen_ai.output.messages", json.dumps([message], ensure_ascii=False))

    def _end_served(self, span: trace.Span, record: CallRecord) -> None:
        model = record.provider_model or record.model.partition(":")[2] or record.model
        if model:
            span.set_attribute("gen_ai.response.model", model)
        if record.provider_response_id:
            span.set_attribute("gen_ai.response.id", record.provider_response_id)
        self._usage(span, record)
        if record.status != "OK":  # a stream that failed after it started
            span.set_attribute("error.type", record.reason or record.status)
            span.set_status(Status(StatusCode.ERROR, record.reason or record.status))
        span.end()

    def _usage(self, span: trace.Span, record: CallRecord) -> None:
        if record.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", (record.finish_reason,))
        usage, cost = record.usage, record.cost
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            if usage.cache_read_tokens:
                span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cache_read_tokens)
            if usage.cache_write_tokens:
                span.set_attribute("gen_ai.usage.cache_creation.input_tokens", usage.cache_write_tokens)
            if usage.reasoning_tokens:
                span.set_attribute("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens)
        if cost is not None and cost.status is not PricingStatus.UNKNOWN:
            span.set_attribute("llm_gateway.cost_usd", format_decimal(cost.total))

    def _provider_name(self, provider: str) -> str:
        return _PROVIDER_NAMES.get(self._kinds.get(provider, ""), provider)
