"""Calls each method of the LLM Gateway once with the asyncio stub and prints usage, cost and latency,
then the day's usage summary from the gateway's ledger.

    .venv/bin/python clients/python/examples/quickstart.py   # from the repository root

Environment: LLM_GATEWAY_ADDR (default localhost:50051), LLM_GATEWAY_API_KEY (optional),
LLM_GATEWAY_MODEL (default mock:echo).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TextIO

import grpc
from google.protobuf.duration_pb2 import Duration

from llmgateway import connect_async, error_info, system, text, user
from llmgateway.v1 import accounting_pb2, catalog_pb2, chat_pb2, usage_pb2

TIMEOUT = 30.0  # seconds, for every call
# The calls below that the usage ledger records: Chat and ChatStream (not EstimateCost or ListModels).
LEDGERED_CALLS = 2


@dataclass
class Result:
    """What each call returned."""

    chat: chat_pb2.ChatResponse
    # The `x-request-id` trailer of the Chat call.
    chat_request_id: str
    # The stream's events in order: start, text deltas, finish.
    stream_events: list[chat_pb2.ChatStreamResponse]
    estimate: catalog_pb2.EstimateCostResponse
    models: list[catalog_pb2.Model]
    # The GetUsageSummary request (today, UTC), and its answers before and after the calls above.
    usage_request: usage_pb2.GetUsageSummaryRequest
    usage_before: usage_pb2.GetUsageSummaryResponse
    usage: usage_pb2.GetUsageSummaryResponse

    @property
    def streamed_text(self) -> str:
        return "".join(e.text_delta.text for e in self.stream_events if e.HasField("text_delta"))


def ms(duration: Duration) -> str:
    """A protobuf Duration as milliseconds, for display."""
    return f"{duration.ToNanoseconds() / 1e6:.2f} ms"


def describe(usage: accounting_pb2.Usage, cost: accounting_pb2.Cost, latency: accounting_pb2.Latency) -> str:
    # Amounts are exact decimal strings: print them as they are (or parse with llmgateway.to_decimal).
    if cost.status == accounting_pb2.PRICING_STATUS_UNKNOWN:
        price = "cost unknown"
    else:
        price = f"cost {cost.total} {cost.currency}"
    return (
        f"  usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
        f" = {usage.total_tokens} tokens{' (estimated)' if usage.estimated else ''}\n"
        f"  {price} (input {cost.input}, output {cost.output})\n"
        f"  latency: {ms(latency.total)} total, {ms(latency.upstream)} upstream,"
        f" {ms(latency.gateway_overhead)} gateway"
    )


def todays_usage_request() -> usage_pb2.GetUsageSummaryRequest:
    """A GetUsageSummary request for today, from 00:00 UTC to 00:00 UTC tomorrow, in one bucket."""
    # timezone.utc rather than datetime.UTC, which needs Python 3.11.
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)  # noqa: UP017
    request = usage_pb2.GetUsageSummaryRequest(granularity=usage_pb2.GRANULARITY_DAY, top_models=3)
    request.filter.start_time.FromDatetime(start)
    request.filter.end_time.FromDatetime(start + timedelta(days=1))
    return request


def describe_usage(summary: usage_pb2.GetUsageSummaryResponse) -> str:
    total = summary.total
    lines = [
        f"  {total.requests} calls ({total.errors} failed), {total.prompt_tokens} prompt +"
        f" {total.completion_tokens} completion tokens, cost {total.cost} {summary.currency}"
    ]
    if summary.top_models_by_cost:
        top = ", ".join(
            f"{m.model} {m.cost} {summary.currency} ({m.requests} calls)" for m in summary.top_models_by_cost
        )
        lines.append(f"  top models by cost: {top}")
    return "\n".join(lines)


async def run(address: str, api_key: str | None, model: str, out: TextIO) -> Result:
    """Calls Chat, ChatStream, EstimateCost and ListModels once each, then reads the day's usage
    summary, printing to `out`."""
    request = chat_pb2.ChatRequest(
        model=model,
        messages=[system("Be brief."), user("Hello from Python, gateway!")],
    )
    async with connect_async(address, api_key) as gateway:
        stub = gateway.stub
        # The day's usage before the calls, to tell below when the ledger has recorded them.
        usage_request = todays_usage_request()
        usage_before = await gateway.usage.GetUsageSummary(usage_request, timeout=TIMEOUT)

        # Chat: one reply. The call object also gives the trailing metadata.
        call = stub.Chat(request, timeout=TIMEOUT)
        reply = await call
        trailers = await call.trailing_metadata()
        request_id = str(trailers.get("x-request-id", "")) if trailers is not None else ""
        print(f"Chat ({reply.model} via {reply.provider}, request {reply.request_id}):", file=out)
        print(f"  {text(reply.message)!r}", file=out)
        print(describe(reply.usage, reply.cost, reply.latency), file=out)

        # ChatStream: start, text deltas as they arrive, then finish with usage, cost and latency.
        events: list[chat_pb2.ChatStreamResponse] = []
        print("ChatStream: ", end="", file=out)
        async for event in stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), timeout=TIMEOUT):
            events.append(event)
            kind = event.WhichOneof("event")
            if kind == "start":
                print(f"[{event.start.model}] ", end="", file=out)
            elif kind == "text_delta":
                print(event.text_delta.text, end="", file=out, flush=True)
            elif kind == "finish":
                finish = event.finish
                print(f"\n  finish: {chat_pb2.FinishReason.Name(finish.finish_reason)}", file=out)
                print(describe(finish.usage, finish.cost, finish.latency), file=out)
                print(f"  time to first token: {ms(finish.latency.time_to_first_token)}", file=out)

        # EstimateCost: what the call would cost on each candidate, cheapest first, without calling.
        estimate = await stub.EstimateCost(
            catalog_pb2.EstimateCostRequest(request=request, candidate_models=[model]), timeout=TIMEOUT
        )
        print("EstimateCost:", file=out)
        for e in estimate.estimates:
            print(
                f"  {e.model}: {e.prompt_tokens} prompt tokens, expected {e.expected_cost.total}"
                f" {e.expected_cost.currency} ({e.expected_output_tokens} output tokens),"
                f" worst case {e.worst_case_cost.total} ({e.worst_case_output_tokens} output tokens)",
                file=out,
            )

        # ListModels: every page.
        models: list[catalog_pb2.Model] = []
        page_token = ""
        while True:
            page = await stub.ListModels(
                catalog_pb2.ListModelsRequest(page_size=100, page_token=page_token), timeout=TIMEOUT
            )
            models.extend(page.models)
            page_token = page.next_page_token
            if not page_token:
                break
        print(f"ListModels: {len(models)} models", file=out)
        for m in models:
            pricing = m.pricing
            if pricing.status == accounting_pb2.PRICING_STATUS_PRICED:
                price = (
                    f"{pricing.input_per_million} in / {pricing.output_per_million} out"
                    f" {pricing.currency} per million tokens"
                )
            else:
                price = accounting_pb2.PricingStatus.Name(pricing.status)
            print(f"  {m.id}: {price}", file=out)

        # GetUsageSummary: today's calls, as the ledger has them. A key that is not an admin key sees
        # only its own calls. The ledger writes in the background (every 100 ms by default), so a
        # summary can lag the calls just made: wait, up to 2 s, until it counts this run's too.
        want = usage_before.total.requests + LEDGERED_CALLS
        for _ in range(20):
            usage = await gateway.usage.GetUsageSummary(usage_request, timeout=TIMEOUT)
            if usage.total.requests >= want:
                break
            await asyncio.sleep(0.1)
        day = usage_request.filter.start_time.ToDatetime().date()
        print(f"GetUsageSummary ({day}, UTC):", file=out)
        print(describe_usage(usage), file=out)
        if usage.total.requests < want:
            print("  (the ledger has not recorded all of this run's calls yet)", file=out)

    return Result(
        chat=reply,
        chat_request_id=request_id,
        stream_events=events,
        estimate=estimate,
        models=models,
        usage_request=usage_request,
        usage_before=usage_before,
        usage=usage,
    )


def main() -> int:
    address = os.environ.get("LLM_GATEWAY_ADDR", "localhost:50051")
    api_key = os.environ.get("LLM_GATEWAY_API_KEY") or None
    model = os.environ.get("LLM_GATEWAY_MODEL", "mock:echo")
    try:
        asyncio.run(run(address, api_key, model, sys.stdout))
    except grpc.RpcError as err:
        info = error_info(err)
        reason = f" {info.reason}" if info is not None else ""
        request_id = f" (request {info.metadata.get('request_id', '')})" if info is not None else ""
        print(f"\nerror: {err.code().name}{reason}: {err.details()}{request_id}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
