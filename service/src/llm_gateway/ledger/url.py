"""Where the ledger lives, from its URL: a SQLite file or a PostgreSQL database.

    sqlite:///var/ledger.db          a path relative to the working directory
    sqlite:////srv/gateway/ledger.db an absolute path (the fourth slash starts it)
    postgresql://user:password@host:5432/dbname   (also postgres://)

The URL may carry a password, so it is only ever shown through `redacted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


class Backend(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgresql"


@dataclass(frozen=True, slots=True)
class LedgerUrl:
    backend: Backend
    url: str  # the whole URL, secret: never log it
    path: Path | None = None  # the SQLite file

    def __repr__(self) -> str:
        return f"LedgerUrl({self.backend.value}, {redacted(self.url)!r})"


def parse_url(url: str) -> LedgerUrl:
    """The ledger's location; a ValueError that never repeats the URL (it may hold a password)."""
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        if not path or path.endswith("/"):
            raise ValueError(
                "a sqlite URL names a file: sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return LedgerUrl(Backend.SQLITE, url, Path(path))
    scheme = url.partition("://")[0]
    if scheme in _POSTGRES_SCHEMES:
        parts = urlsplit(url)
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("a postgresql URL names a host: postgresql://user@host:5432/dbname")
        try:
            parts.port  # noqa: B018 (raises for a port that is not a number)
        except ValueError:
            raise ValueError("the port of a postgresql URL is a number") from None
        return LedgerUrl(Backend.POSTGRES, url)
    raise ValueError("must start with sqlite:/// or postgresql://")


def redacted(url: str) -> str:
    """The URL without its password or query (which can carry one): safe to log."""
    if url.startswith(SQLITE_PREFIX):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" if parts.password else f"{parts.username}@{host}"
    netloc = netloc if parts.username else host
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
