"""`llm-gateway usage`: a running gateway's usage summary for a period, as a table; with
`--recommend`, the cheaper models each project's calls could have used instead.

It asks the gateway's UsageService, so it sees what its key may see (an admin key everything, any
other key its own calls) and works against any gateway it can reach, a fleet's included.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from llmgateway.v1 import usage_pb2, usage_service_pb2_grpc

_GRANULARITIES = {
    "hour": usage_pb2.GRANULARITY_HOUR,
    "day": usage_pb2.GRANULARITY_DAY,
    "month": usage_pb2.GRANULARITY_MONTH,
}
_BUCKET_FORMAT = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser(
        "usage",
        help="print a running gateway's usage summary for a period",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    usage.add_argument("--address", default="localhost:50051")
    usage.add_argument(
        "--api-key",
        default=os.environ.get("LLM_GATEWAY_API_KEY", ""),
        help="the gateway key to ask with (default: $LLM_GATEWAY_API_KEY)",
    )
    usage.add_argument("--from", dest="start", type=_day, help="first day, YYYY-MM-DD (default: today, UTC)")
    usage.add_argument("--to", dest="end", type=_day, help="last day, included (default: the first day)")
    usage.add_argument("--granularity", choices=sorted(_GRANULARITIES), default="day")
    usage.add_argument(
        "--by",
        default="",
        help="comma-separated dimensions: api_key, user, project, tenant, provider, model, tag:<key>",
    )
    usage.add_argument("--key", default="", help="only the calls of this gateway key (by name)")
    for dimension in ("user", "project", "tenant", "provider"):
        usage.add_argument(f"--{dimension}", default="", help=f"only the calls of this {dimension}")
    usage.add_argument("--model", default="", help="only the calls served by this provider:model")
    usage.add_argument(
        "--tag",
        action="append",
        default=[],
        type=_tag,
        metavar="KEY=VALUE",
        help="only the calls carrying this tag (repeat: all of them)",
    )
    usage.add_argument("--task", default="", help="only the calls made for this task_type")
    usage.add_argument(
        "--recommend",
        action="store_true",
        help="print cost recommendations instead: cheaper models with the same capabilities",
    )
    usage.add_argument("--timeout", type=float, default=10.0)


def run(args: argparse.Namespace) -> int:
    first = args.start or datetime.now(UTC).date()
    last = args.end or first
    if last < first:
        print("--to is before --from", file=sys.stderr)
        return 2
    period = usage_pb2.UsageFilter(
        start_time=_timestamp(datetime.combine(first, time(), UTC)),
        end_time=_timestamp(datetime.combine(last + timedelta(days=1), time(), UTC)),
        api_key=args.key,
        user=args.user,
        project=args.project,
        tenant=args.tenant,
        provider=args.provider,
        model=args.model,
        tags=dict(args.tag),
        task_type=args.task,
    )
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    try:
        with grpc.insecure_channel(args.address) as channel:
            stub = usage_service_pb2_grpc.UsageServiceStub(channel)
            if args.recommend:
                found = stub.GetCostRecommendations(
                    usage_pb2.GetCostRecommendationsRequest(filter=period),
                    metadata=metadata,
                    timeout=args.timeout,
                )
                print(render_recommendations(found, first, last))
                return 0
            request = usage_pb2.GetUsageSummaryRequest(
                filter=period,
                granularity=_GRANULARITIES[args.granularity],
                group_by=[d.strip() for d in args.by.split(",") if d.strip()],
            )
            reply = stub.GetUsageSummary(request, metadata=metadata, timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"usage: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(render(reply, first, last, args.granularity, list(request.group_by)))
    return 0


def render_recommendations(reply: usage_pb2.GetCostRecommendationsResponse, first: date, last: date) -> str:
    period = f"{first}" if first == last else f"{first} to {last}"
    currency = reply.currency
    lines = [
        f"Cost recommendations {period} (UTC)",
        f"{_money(reply.total_cost)} {currency} spent; {_money(reply.potential_savings)} {currency} less "
        "on the cheapest alternative of each project and model",
        "",
    ]
    header = [
        "project",
        "model",
        "calls",
        f"cost ({currency})",
        "alternative",
        f"cost ({currency})",
        "saved",
        "its p50",
        "its errors",
    ]
    rows = []
    for r in reply.recommendations:
        mine = [r.project or "-", r.model, f"{r.requests:,}", _money(r.cost)]
        if not r.alternatives:
            rows.append([*mine, "(none cheaper)", "", "", "", ""])
        for i, a in enumerate(r.alternatives):
            seen = a.observed
            rows.append(
                [
                    *(mine if i == 0 else [""] * len(mine)),
                    a.model,
                    _money(a.cost),
                    f"{a.savings_fraction:.0%}",
                    _seconds(seen.latency_p50) if seen.requests else "-",
                    f"{seen.error_rate:.1%}" if seen.requests else "-",
                ]
            )
    lines += _table(header, rows, text_columns=2) if rows else ["(no calls)"]
    return "\n".join(lines)


def render(
    reply: usage_pb2.GetUsageSummaryResponse,
    first: date,
    last: date,
    granularity: str,
    group_by: Sequence[str],
) -> str:
    total, currency = reply.total, reply.currency
    period = f"{first}" if first == last else f"{first} to {last}"
    # Subscription fees spread over the calls, shown where there are any (docs/subscriptions.md).
    amortized = bool(Decimal(total.amortized_cost or "0"))
    fees = f" (and {_money(total.amortized_cost)} {currency} of subscription fees)" if amortized else ""
    lines = [
        f"Usage {period} (UTC), by {granularity}",
        f"{total.requests:,} calls, {total.errors:,} failed; {_money(total.cost)} {currency}{fees}; "
        f"{total.prompt_tokens:,} tokens in, {total.completion_tokens:,} out; "
        f"latency p50 {_seconds(total.latency_p50)}, p95 {_seconds(total.latency_p95)}",
        "",
    ]
    shares = [f"fees ({currency})"] if amortized else []
    figures = ["calls", "failed", "tokens in", "tokens out", f"cost ({currency})", *shares, "p50"]
    header = [granularity, *group_by, *figures]
    rows = [
        [
            bucket.start_time.ToDatetime(tzinfo=UTC).strftime(_BUCKET_FORMAT[granularity]),
            *(value or "-" for value in bucket.group),
            f"{bucket.stats.requests:,}",
            f"{bucket.stats.errors:,}",
            f"{bucket.stats.prompt_tokens:,}",
            f"{bucket.stats.completion_tokens:,}",
            _money(bucket.stats.cost),
            *([_money(bucket.stats.amortized_cost)] if amortized else []),
            _seconds(bucket.stats.latency_p50),
        ]
        for bucket in reply.buckets
    ]
    lines += _table(header, rows, text_columns=1 + len(group_by)) if rows else ["(no calls)"]
    if reply.top_models_by_cost:
        lines += ["", "Top models by cost"]
        lines += _table(
            ["model", "calls", f"cost ({currency})", *shares],
            [
                [
                    m.model or "-",
                    f"{m.requests:,}",
                    _money(m.cost),
                    *([_money(m.amortized_cost)] if amortized else []),
                ]
                for m in reply.top_models_by_cost
            ],
            text_columns=1,
        )
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int) -> list[str]:
    """Columns padded to their widest cell: the first `text_columns` to the left, figures to the
    right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]


def _money(text: str) -> str:
    """An exact decimal string as it is, never rounded ("0" for none)."""
    return format(Decimal(text or "0"), "f")


def _seconds(value: duration_pb2.Duration) -> str:
    if not value.seconds and not value.nanos:
        return "-"
    return f"{value.ToTimedelta().total_seconds():.3f} s"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day, YYYY-MM-DD") from None


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out
