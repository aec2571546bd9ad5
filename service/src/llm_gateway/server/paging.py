"""AIP-158 paging for the listing RPCs: page sizes, and page tokens that only continue the listing
(and filters) that issued them."""

from __future__ import annotations

import base64

from llm_gateway.domain.errors import invalid_field

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000


def page_size(size: int) -> int:
    """The page size asked for (0: the default), refused outside 0 to MAX_PAGE_SIZE."""
    if not 0 <= size <= MAX_PAGE_SIZE:
        raise invalid_field("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    return size or DEFAULT_PAGE_SIZE


def page_token(position: int, issued_for: str) -> str:
    """The token of the page starting at `position` of the listing `issued_for` names."""
    return base64.urlsafe_b64encode(f"{position}:{issued_for}".encode()).decode().rstrip("=")


def page_position(token: str, issued_for: str) -> int:
    """Where `token` continues the listing `issued_for` names (0 without one)."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        position_text, _, issuer = raw.partition(":")
        position = int(position_text)
    except ValueError:
        raise invalid_field("page_token", "not a token from a previous reply of this listing") from None
    if issuer != issued_for or position < 0:
        raise invalid_field("page_token", "was issued for a different listing or filters")
    return position
