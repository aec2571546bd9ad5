"""The ledger's stores, each test run on SQLite and on a real PostgreSQL server: records come back
field for field, sums stay exact, summaries and percentiles match what the test computes itself,
pages and filters select what they say, a key sees only its own calls, migrations run twice, and
retention removes old calls."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Context, Decimal, localcontext
from pathlib import Path

import pytest

from llm_gateway.domain.messages import Caller
from llm_gateway.domain.results import Usage
from llm_gateway.gateway.outcome import Attempt, Latency
from llm_gateway.gateway.record import ANONYMOUS, CallRecord, Principal
from llm_gateway.ledger import (
    AccessDenied,
    Backend,
    Dimension,
    Granularity,
    GroupBy,
    InvalidPageToken,
    LedgerQueryError,
    LedgerStore,
    RecordFilter,
    Stats,
    SummaryRequest,
    UsageQueries,
    open_store,
    parse_url,
)
from llm_gateway.ledger.rows import encode
from llm_gateway.ledger.sql import Query
from llm_gateway.pricing import Cost, PricingStatus
from tests.ledgers import T0, backend_url, record, store

__all__ = ["backend_url", "store"]  # fixtures

ADMIN = Principal("ops", admin=True)
DAY = 86_400.0


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def put(store: LedgerStore, records: Sequence[CallRecord]) -> None:
    for i in range(0, len(records), 500):
        await store.insert([encode(r) for r in records[i : i + 500]])


async def everything(store: LedgerStore, principal: Principal = ADMIN, **filters: object) -> list[CallRecord]:
    queries = UsageQueries(store)
    found: list[CallRecord] = []
    token = ""
    while True:
        page = await queries.list_records(
            principal,
            RecordFilter(**filters),  # type: ignore[arg-type]
            page_size=1000,
            page_token=token,
        )
        found.extend(page.records)
        token = page.next_page_token
        if not token:
            return found


async def test_every_field_of_a_record_comes_back_as_written(store: LedgerStore) -> None:
    full = CallRecord(
        id="chat_full",
        request_id="req-full",
        started_at=1_741_964_966_123_456 / 1e6,
        ended_at=1_741_964_967_654_321 / 1e6,
        principal=Principal("team-a", admin=True),
        caller=Caller(user="alice", project="search", tenant="acme", tracking_id="trk-7"),
        tags={"team": "search", "odd.key": "x", 'q"uote': "ü ☃", "empty": ""},
        requested_model="fast",
        model="openai:gpt-4o-mini",
        provider="openai",
        status="OK",
        reason="",
        streamed=True,
        dry_run=False,
        fallback_used=True,
        usage=Usage(
            prompt_tokens=1234,
            completion_tokens=567,
            cache_read_tokens=100,
            cache_write_tokens=50,
            reasoning_tokens=20,
            cache_write_1h_tokens=10,
            estimated=True,
        ),
        cost=Cost(
            status=PricingStatus.PRICED,
            source="price-file",
            currency="USD",
            input=Decimal("0.0000375"),
            cached_input=Decimal("3.75E-8"),  # a per-token price, under a nano-dollar
            cache_write=Decimal("0.000001234567890123456789"),
            cache_write_1h=Decimal("1E-7"),
            output=Decimal("12345.678901234567890123"),
            request_fee=Decimal("0.01"),
            total=Decimal("12345.688939989802380123"),
            cost_per_1k_tokens=Decimal("6.909730596513"),
            cache_savings=Decimal("0.00000003"),
            estimated=True,
        ),
        latency=Latency(total=1.530865, time_to_first_byte=0.2, time_to_first_token=0.25, upstream=1.4),
        attempts=(
            Attempt(
                "anthropic", "anthropic:claude-haiku-4-5", "UNAVAILABLE", "UPSTREAM_OVERLOADED", "529", 0.5
            ),
            Attempt("openai", "openai:gpt-4o-mini", "OK", "", "", 1.0000001),
        ),
    )
    refused = CallRecord(
        id="chat_refused",
        request_id="req-refused",
        started_at=(1_741_964_966_123_456 - 1) / 1e6,
        ended_at=1_741_964_966_123_456 / 1e6,
        principal=ANONYMOUS,
        caller=Caller(),
        tags={},
        requested_model="nope",
        model="",
        provider="",
        status="INVALID_ARGUMENT",
        reason="INVALID_REQUEST",
        streamed=False,
        dry_run=False,
        fallback_used=False,
        usage=None,
        cost=None,
        latency=None,
    )
    unknown_price = replace(
        record(at=T0 - 1, call_id="chat_unknown"),
        cost=Cost(status=PricingStatus.UNKNOWN, source=""),
        dry_run=True,
    )
    await put(store, [full, refused, unknown_price])
    assert await everything(store) == [full, refused, unknown_price]


async def test_a_batch_written_twice_is_stored_once(store: LedgerStore) -> None:
    batch = [record(at=T0 + i) for i in range(10)]
    await put(store, batch)
    await put(store, [*batch[5:], record(at=T0 + 20)])
    assert len(await everything(store)) == 11


async def test_sums_of_many_awkward_amounts_are_exact(store: LedgerStore) -> None:
    rng = random.Random(14)
    prices = [Decimal("0.0000000375"), Decimal("0.00000015"), Decimal("1E-12"), Decimal("0.000002500001")]
    records = []
    for i in range(2000):
        tokens = rng.randrange(1, 200_000)
        amount = tokens * prices[i % len(prices)] + Decimal(i) * Decimal("1E-18")
        if i % 97 == 0:
            amount += Decimal("98765.432109876543210987654321")
        records.append(record(at=T0 + i * 60, key=f"k{i % 3}", cost=amount))
    await put(store, records)

    exact = Context(prec=200)
    with localcontext(exact):
        expected = sum((r.cost.total for r in records if r.cost), Decimal(0))
    # More significant digits than a double holds (17), or Decimal's default context (28): a
    # float, or a sum in the default context, anywhere on the way would show.
    assert len(expected.as_tuple().digits) > 28

    request = SummaryRequest(
        RecordFilter(start=when(T0), end=when(T0 + 2000 * 60)),
        granularity=Granularity.HOUR,
        group_by=(GroupBy(Dimension.KEY),),
    )
    summary = await UsageQueries(store).summary(ADMIN, request)
    assert summary.total.cost == expected
    per_key: dict[str, Decimal] = defaultdict(Decimal)
    with localcontext(exact):
        for r in records:
            assert r.cost is not None
            per_key[r.principal.key] += r.cost.total
        by_bucket: dict[str, Decimal] = defaultdict(Decimal)
        for b in summary.buckets:
            by_bucket[b.group[0]] += b.stats.cost
        by_provider = sum((p.cost for p in summary.cost_by_provider), Decimal(0))
    assert dict(by_bucket) == dict(per_key)
    assert by_provider == expected


def percentile(values: Sequence[float], fraction: float) -> float:
    """Computed apart from the ledger's own code: the standard library's inclusive quantiles
    (the same definition as PostgreSQL's percentile_cont)."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(fraction * 100) - 1]


def expected_stats(records: Sequence[CallRecord]) -> Stats:
    latencies = [r.latency.total for r in records if r.latency]
    firsts = [r.latency.time_to_first_token for r in records if r.latency and r.latency.time_to_first_token]
    usages = [r.usage for r in records if r.usage]
    with localcontext(Context(prec=100)):
        cost = sum((r.cost.total for r in records if r.cost and r.cost.currency == "USD"), Decimal(0))
    return Stats(
        requests=len(records),
        errors=sum(r.status != "OK" for r in records),
        dry_runs=sum(r.dry_run for r in records),
        unpriced=sum(r.cost is not None and r.cost.status is PricingStatus.UNKNOWN for r in records),
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cache_read_tokens=sum(u.cache_read_tokens for u in usages),
        cache_write_tokens=sum(u.cache_write_tokens for u in usages),
        cache_write_1h_tokens=sum(u.cache_write_1h_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        cost=cost,
        latency_avg=statistics.fmean(latencies) if latencies else None,
        latency_p50=percentile(latencies, 0.5) if latencies else None,
        latency_p95=percentile(latencies, 0.95) if latencies else None,
        first_token_avg=statistics.fmean(firsts) if firsts else None,
        first_token_p50=percentile(firsts, 0.5) if firsts else None,
        first_token_p95=percentile(firsts, 0.95) if firsts else None,
    )


def assert_same(actual: Stats, expected: Stats) -> None:
    for name in Stats.__dataclass_fields__:
        got, want = getattr(actual, name), getattr(expected, name)
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-12), name
        else:
            assert got == want, name


def mixed_calls(start: float, count: int, seed: int) -> list[CallRecord]:
    """Calls over three days and across a month's end: several keys, models, tags and outcomes."""
    rng = random.Random(seed)
    models = ["openai:gpt-4o-mini", "openai:gpt-4o", "anthropic:claude-haiku-4-5"]
    calls = []
    for _ in range(count):
        at = start + rng.uniform(0, 3 * DAY)
        streamed = rng.random() < 0.4
        failed = rng.random() < 0.15
        tags = rng.choice([{"team": "search"}, {"team": "ads", "env": "prod"}, {}])
        usage = Usage(
            prompt_tokens=rng.randrange(0, 5000),
            completion_tokens=rng.randrange(0, 900),
            cache_read_tokens=rng.randrange(0, 100),
            cache_write_tokens=rng.randrange(0, 50),
            reasoning_tokens=rng.randrange(0, 30),
            cache_write_1h_tokens=rng.randrange(0, 5),
        )
        calls.append(
            record(
                at=round(at, 6),
                key=rng.choice(["team-a", "team-b"]),
                model=rng.choice(models),
                tags=tags,
                status="UNAVAILABLE" if failed else "OK",
                reason="UPSTREAM_TIMEOUT" if failed else "",
                cost=Decimal(rng.randrange(1, 10**9)) * Decimal("1E-15"),
                usage=usage,
                latency=round(rng.uniform(0.05, 4.0), 6),
                first_token=round(rng.uniform(0.01, 0.5), 6) if streamed else None,
                streamed=streamed,
                dry_run=rng.random() < 0.05,
            )
        )
    return calls


def bucket_start(at: float, granularity: Granularity) -> datetime:
    moment = when(at)
    if granularity is Granularity.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    if granularity is Granularity.DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


GROUPINGS: list[tuple[GroupBy, Callable[[CallRecord], str]]] = [
    (GroupBy(Dimension.KEY), lambda r: r.principal.key),
    (GroupBy(Dimension.MODEL), lambda r: r.model),
    (GroupBy(Dimension.PROVIDER), lambda r: r.provider),
    (GroupBy(Dimension.TAG, "team"), lambda r: r.tags.get("team", "")),
]


@pytest.mark.parametrize("granularity", list(Granularity))
async def test_summaries_match_what_the_calls_add_up_to(store: LedgerStore, granularity: Granularity) -> None:
    start = datetime(2025, 1, 30, 7, tzinfo=UTC).timestamp()  # three days across January's end
    calls = mixed_calls(start, 600, seed=len(granularity.value))
    await put(store, calls)
    window = RecordFilter(start=when(start), end=when(start + 3 * DAY))
    queries = UsageQueries(store)
    for groups in ([], [GROUPINGS[0]], [GROUPINGS[3], GROUPINGS[1]], [GROUPINGS[2]]):
        request = SummaryRequest(window, granularity=granularity, group_by=tuple(g for g, _ in groups))
        summary = await queries.summary(ADMIN, request)
        expected: dict[tuple[datetime, tuple[str, ...]], list[CallRecord]] = defaultdict(list)
        for call in calls:
            key = (bucket_start(call.started_at, granularity), tuple(value(call) for _, value in groups))
            expected[key].append(call)
        assert [(b.start, b.group) for b in summary.buckets] == sorted(expected)
        for bucket in summary.buckets:
            assert_same(bucket.stats, expected_stats(expected[bucket.start, bucket.group]))
        assert_same(summary.total, expected_stats(calls))

    by_model: dict[str, list[CallRecord]] = defaultdict(list)
    for call in calls:
        by_model[call.model].append(call)
    costs = {m: expected_stats(rs).cost for m, rs in by_model.items()}
    assert [m.model for m in summary.top_models_by_cost] == sorted(costs, key=lambda m: -costs[m])
    assert [(m.model, m.requests) for m in summary.top_models_by_calls] == sorted(
        ((m, len(rs)) for m, rs in by_model.items()), key=lambda pair: -pair[1]
    )
    providers: dict[str, Decimal] = defaultdict(Decimal)
    for model, cost in costs.items():
        providers[model.partition(":")[0]] += cost
    assert {p.provider: p.cost for p in summary.cost_by_provider} == providers


async def test_summary_filters_narrow_and_other_currencies_are_not_added(store: LedgerStore) -> None:
    calls = mixed_calls(T0, 200, seed=3)
    euro = record(at=T0 + 10, cost=Decimal("1000"), currency="EUR", tags={"team": "search"})
    await put(store, [*calls, euro])
    window = dict(start=when(T0), end=when(T0 + 3 * DAY))
    queries = UsageQueries(store)
    selected = await queries.summary(
        ADMIN,
        SummaryRequest(RecordFilter(**window, tags=(("team", "search"),), provider="openai"), top=1),  # type: ignore[arg-type]
    )
    chosen = [c for c in calls if c.tags.get("team") == "search" and c.provider == "openai"]
    assert_same(selected.total, expected_stats([*chosen, euro]))  # EUR counted as a call, not as cost
    assert len(selected.top_models_by_cost) == 1
    in_euros = await queries.summary(ADMIN, SummaryRequest(RecordFilter(**window), currency="EUR"))  # type: ignore[arg-type]
    assert in_euros.total.cost == Decimal(1000)


async def test_pages_walk_every_record_once_newest_first(store: LedgerStore) -> None:
    calls = [record(at=T0 + i) for i in range(90)] + [record(at=T0 + 45) for _ in range(30)]  # ties
    await put(store, calls)
    queries = UsageQueries(store)
    seen: list[CallRecord] = []
    token, pages = "", 0
    while True:
        page = await queries.list_records(ADMIN, RecordFilter(), page_size=50, page_token=token)
        pages += 1
        seen.extend(page.records)
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert [c.id for c in seen] == [
        c.id for c in sorted(calls, key=lambda c: (c.started_at, c.id), reverse=True)
    ]

    first = await queries.list_records(ADMIN, RecordFilter(), page_size=50)
    with pytest.raises(InvalidPageToken):
        await queries.list_records(ADMIN, RecordFilter(user="bob"), page_token=first.next_page_token)
    with pytest.raises(InvalidPageToken):
        await queries.list_records(ADMIN, RecordFilter(), page_token="not-a-token")
    with pytest.raises(LedgerQueryError):
        await queries.list_records(ADMIN, RecordFilter(), page_size=-1)
    everything_at_once = await queries.list_records(ADMIN, RecordFilter(), page_size=10**6)
    assert len(everything_at_once.records) == 120
    assert everything_at_once.next_page_token == ""
    default = await queries.list_records(ADMIN, RecordFilter())
    assert len(default.records) == 50


async def test_each_filter_selects_what_it_names(store: LedgerStore) -> None:
    base = record(at=T0)
    others = {
        "key": record(at=T0 + 1, key="team-b"),
        "user": record(at=T0 + 2, user="bob"),
        "project": record(at=T0 + 3, project="ads"),
        "tenant": record(at=T0 + 4, tenant="globex"),
        "provider": record(at=T0 + 5, model="anthropic:claude-haiku-4-5"),
        "model": record(at=T0 + 6, model="openai:gpt-4o"),
        "tag": record(at=T0 + 7, tags={"team": "ads", "odd.key": 'v"1'}),
    }
    await put(store, [base, *others.values()])
    assert {c.id for c in await everything(store, key="team-b")} == {others["key"].id}
    assert {c.id for c in await everything(store, user="bob")} == {others["user"].id}
    assert {c.id for c in await everything(store, project="ads")} == {others["project"].id}
    assert {c.id for c in await everything(store, tenant="globex")} == {others["tenant"].id}
    assert {c.id for c in await everything(store, provider="anthropic")} == {others["provider"].id}
    assert {c.id for c in await everything(store, model="openai:gpt-4o")} == {others["model"].id}
    tagged = await everything(store, tags=(("odd.key", 'v"1'), ("team", "ads")))
    assert {c.id for c in tagged} == {others["tag"].id}
    assert await everything(store, tags=(("team", "search"),)) == []
    window = await everything(store, start=when(T0 + 2), end=when(T0 + 5))  # start in, end out
    assert {c.id for c in window} == {others[n].id for n in ("user", "project", "tenant")}


async def test_a_key_sees_only_its_own_calls_and_an_admin_sees_all(store: LedgerStore) -> None:
    mine = [record(at=T0 + i, key="team-a") for i in range(5)]
    theirs = [record(at=T0 + 10 + i, key="team-b") for i in range(3)]
    await put(store, mine + theirs)
    member = Principal("team-a", admin=False)
    assert {c.id for c in await everything(store, member)} == {c.id for c in mine}
    assert {c.id for c in await everything(store, member, key="team-a")} == {c.id for c in mine}
    with pytest.raises(AccessDenied) as denied:
        await everything(store, member, key="team-b")
    assert denied.value.field == "key"
    assert len(await everything(store, ADMIN)) == 8
    assert len(await everything(store, ANONYMOUS)) == 8  # authentication off: everyone is admin

    queries = UsageQueries(store)
    window = RecordFilter(start=when(T0), end=when(T0 + DAY))
    own = await queries.summary(member, SummaryRequest(window, group_by=(GroupBy(Dimension.KEY),)))
    assert own.total.requests == 5
    assert {b.group for b in own.buckets} == {("team-a",)}
    with pytest.raises(AccessDenied):
        await queries.summary(
            member, SummaryRequest(RecordFilter(start=when(T0), end=when(T0 + 1), key="team-b"))
        )
    assert (await queries.summary(ADMIN, SummaryRequest(window))).total.requests == 8


async def test_migrations_apply_once_however_often_they_run(backend_url: str) -> None:
    stores = [open_store(parse_url(backend_url), timeout=5.0) for _ in range(3)]
    try:
        # Three processes starting at once, then each again.
        assert await asyncio.gather(*(s.migrate() for s in stores)) == [3, 3, 3]
        assert await asyncio.gather(*(s.migrate() for s in stores)) == [3, 3, 3]
        rows = await stores[0].fetch(Query("SELECT version FROM ledger_schema", ()))
        assert sorted(tuple(r) for r in rows) == [(1,), (2,), (3,)]
        await stores[1].insert([encode(record())])
        assert len(await everything(stores[2])) == 1
    finally:
        for s in stores:
            await s.close()


async def test_retention_removes_only_calls_before_the_cutoff(store: LedgerStore) -> None:
    now = datetime(2025, 6, 15, 12, tzinfo=UTC).timestamp()
    ages = [200, 100, 40, 31, 29, 10, 0]  # days
    calls = {age: record(at=now - age * DAY) for age in ages}
    await put(store, list(calls.values()))
    pruned = await store.prune(when(now - 30 * DAY))
    kept = {c.id for c in await everything(store)}
    assert kept == {calls[age].id for age in ages if age < 30}
    assert pruned.rows + len(pruned.partitions) > 0
    if store.backend is Backend.POSTGRES:
        # Whole months before the cutoff went as partitions, without deleting a row of them.
        assert pruned.partitions == ("ledger_calls_2024_11", "ledger_calls_2025_03")
        assert pruned.rows == 2  # May 6th and 15th: in the cutoff's month, deleted row by row
    else:
        assert pruned.rows == 4
    again = await store.prune(when(now - 30 * DAY))
    assert again.rows == 0
    assert again.partitions == ()


async def test_retention_hands_sqlite_pages_back_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = open_store(parse_url(f"sqlite:///{path}"), timeout=5.0)
    await store.migrate()
    try:
        old = [record(at=T0 - 100 * DAY + i, tags={"team": "search" * 10}) for i in range(20_000)]
        new = [record(at=T0 + i) for i in range(2_000)]
        await put(store, old + new)
        full = _checkpointed_size(path)
        await store.prune(when(T0 - DAY))
        after = _checkpointed_size(path)
    finally:
        await store.close()
    print(f"\nSQLite file: {full / 1e6:.1f} MB with 22,000 calls, {after / 1e6:.1f} MB after removing 20,000")
    assert after < full / 3
    assert _count(path) == 2_000


def _checkpointed_size(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def _count(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        count: int = connection.execute("SELECT count(*) FROM ledger_calls").fetchone()[0]
        return count


def test_filters_and_summaries_refuse_what_they_cannot_answer() -> None:
    with pytest.raises(LedgerQueryError, match="timezone"):
        RecordFilter(start=datetime(2025, 1, 1))
    with pytest.raises(LedgerQueryError, match="before start"):
        RecordFilter(start=when(T0), end=when(T0 - 1))
    with pytest.raises(LedgerQueryError, match="required"):
        SummaryRequest(RecordFilter(start=when(T0)))
    with pytest.raises(LedgerQueryError, match="twice"):
        SummaryRequest(RecordFilter(start=when(T0), end=when(T0)), group_by=(GroupBy(Dimension.KEY),) * 2)
    assert GroupBy.parse("tag:team") == GroupBy(Dimension.TAG, "team")
    assert GroupBy.parse("model") == GroupBy(Dimension.MODEL)
    for bad in ("tag", "tag:", "colour", "model:x"):
        with pytest.raises(LedgerQueryError):
            GroupBy.parse(bad)
    assert str(GroupBy.parse("tag:team")) == "tag:team"
