"""The usage ledger: every call the gateway handles, one row each, in SQLite or PostgreSQL, with
the queries the usage service answers from it (docs/ledger.md)."""

from llm_gateway.ledger.ledger import Ledger
from llm_gateway.ledger.query import (
    AccessDenied,
    Bucket,
    Dimension,
    Granularity,
    GroupBy,
    InvalidPageToken,
    LedgerQueryError,
    ModelUsage,
    ProviderCost,
    RecordFilter,
    RecordPage,
    Stats,
    SummaryRequest,
    UsageSummary,
)
from llm_gateway.ledger.store import LedgerStore, Pruned, open_store
from llm_gateway.ledger.url import Backend, LedgerUrl, parse_url, redacted
from llm_gateway.ledger.usage import UsageQueries
from llm_gateway.ledger.writer import LedgerWriter, WriterStats

__all__ = [
    "AccessDenied",
    "Backend",
    "Bucket",
    "Dimension",
    "Granularity",
    "GroupBy",
    "InvalidPageToken",
    "Ledger",
    "LedgerQueryError",
    "LedgerStore",
    "LedgerUrl",
    "LedgerWriter",
    "ModelUsage",
    "ProviderCost",
    "Pruned",
    "RecordFilter",
    "RecordPage",
    "Stats",
    "SummaryRequest",
    "UsageQueries",
    "UsageSummary",
    "WriterStats",
    "open_store",
    "parse_url",
    "redacted",
]
