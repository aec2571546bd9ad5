"""Upstream text is untrusted. Before any of it (an error message, an error code, a reason) reaches a
caller, a log line or a metric, it is bounded, stripped of control characters and cleared of
anything shaped like a credential or a server's file path.

Removing the provider key verbatim is not enough: providers echo keys truncated, masked
(`sk-abc...xyz`) or inside other text, and echo other secrets the gateway never had (a proxy's
token, a JWT). So three nets are cast: the gateway's own secrets, whole or any 8-character piece of
them; well-known key shapes; and long opaque tokens that look like one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
# What a message may keep; longer texts are cut (an upstream may echo a whole request).
MAX_MESSAGE = 500
# Past this, text is cut before it is scanned, so a huge body costs no more than a small one.
_SCAN_LIMIT = 4 * MAX_MESSAGE
# A piece of one of the gateway's secrets this long, anywhere in a token, redacts the token.
_PIECE = 8

# Runs of the characters keys and tokens are made of.
_TOKEN = re.compile(rf"[A-Za-z0-9_\-+/=.~]{{{_PIECE},}}")
_KEY_SHAPED = re.compile(
    r"""
      \b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}                    # OpenAI, Anthropic and Stripe-style keys
    | \bAIza[0-9A-Za-z_\-]{20,}                            # Google API keys
    | \b(?:ghp|gho|ghu|ghs|github_pat|glpat|hf|xox[abpr])[_-][A-Za-z0-9_\-]{10,}
    | \beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]*)?   # JWTs
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                        # AWS access key ids
    """,
    re.VERBOSE,
)
# `Bearer <token>`, `api_key=<value>`, `"password": "<value>"`: the name stays, the value goes.
_ASSIGNED = re.compile(
    r"""(?ix)
    (\bbearer\s+|\b(?:api[-_]?key|access[-_]?token|auth[-_]?token|token|secret|password|authorization)
        ["']?\s*[:=]\s*["']?)
    [^\s"',;&}]+
    """
)
# Long opaque runs mixing letters and digits: tokens, session ids, signed URLs' signatures.
_OPAQUE = re.compile(r"(?=[A-Za-z0-9_\-+/=]*\d)(?=[A-Za-z0-9_\-+/=]*[A-Za-z])[A-Za-z0-9_\-+/=]{32,}")
# Absolute file paths (a server's traceback): two or more segments not part of a URL.
_PATH = re.compile(r"(?<![\w.:/~-])(?:/[\w.\-]+){2,}/?|\b[A-Za-z]:\\(?:[^\\\s\"']+\\)+[^\\\s\"']*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# An error code worth passing on is an identifier: `rate_limit_exceeded`, `RESOURCE_EXHAUSTED`.
_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class Scrubber:
    """Clears upstream text of the given secrets and of anything credential-shaped."""

    __slots__ = ("_pieces", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self._pieces = frozenset(
            secret[i : i + _PIECE] for secret in self._secrets for i in range(len(secret) - _PIECE + 1)
        )

    def text(self, text: str, limit: int = MAX_MESSAGE) -> str:
        """`text` fit to pass on: at most `limit` characters, on one line of printable text."""
        text = text[:_SCAN_LIMIT]
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        if self._pieces:
            text = _TOKEN.sub(self._redact_pieces, text)
        text = _PATH.sub("[path]", text)
        text = _KEY_SHAPED.sub(REDACTED, text)
        text = _ASSIGNED.sub(lambda m: m.group(1) + REDACTED, text)
        text = _OPAQUE.sub(REDACTED, text)
        text = _CONTROL.sub(" ", text)
        return text[:limit]

    def code(self, code: str) -> str:
        """An upstream error code if it is a plain identifier that survives scrubbing, else ""."""
        cleaned = self.text(code, 64)
        return cleaned if cleaned == code and _CODE.match(code) else ""

    def _redact_pieces(self, match: re.Match[str]) -> str:
        token = match.group(0)
        pieces = self._pieces
        for i in range(len(token) - _PIECE + 1):
            if token[i : i + _PIECE] in pieces:
                return REDACTED
        return token
