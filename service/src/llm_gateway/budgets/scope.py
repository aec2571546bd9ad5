"""Who a budget covers: one gateway key, a caller's user, project or tenant, a tag value, or the
whole gateway. Written in config as `key:NAME`, `user:ID`, `project:ID`, `tenant:ID`,
`tag:KEY=VALUE` or `gateway`."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from llm_gateway.domain.messages import Caller
from llm_gateway.domain.principal import Principal


class ScopeKind(enum.StrEnum):
    KEY = "key"
    USER = "user"
    PROJECT = "project"
    TENANT = "tenant"
    TAG = "tag"
    GATEWAY = "gateway"


@dataclass(frozen=True, slots=True)
class Scope:
    kind: ScopeKind
    value: str = ""  # the key name, user, project or tenant id, or the tag's value
    tag: str = ""  # the tag's key, for a tag scope

    def covers(self, principal: Principal, caller: Caller, tags: Mapping[str, str]) -> bool:
        """Whether a call by `principal`, saying `caller` and `tags` of itself, counts here."""
        match self.kind:
            case ScopeKind.GATEWAY:
                return True
            case ScopeKind.KEY:
                return principal.key == self.value
            case ScopeKind.USER:
                return caller.user == self.value
            case ScopeKind.PROJECT:
                return caller.project == self.value
            case ScopeKind.TENANT:
                return caller.tenant == self.value
            case ScopeKind.TAG:
                return tags.get(self.tag) == self.value

    def __str__(self) -> str:
        if self.kind is ScopeKind.GATEWAY:
            return "gateway"
        if self.kind is ScopeKind.TAG:
            return f"tag:{self.tag}={self.value}"
        return f"{self.kind.value}:{self.value}"


def parse_scope(text: str) -> Scope:
    """The scope `text` names; ValueError saying what is wrong otherwise."""
    if text == "gateway":
        return Scope(ScopeKind.GATEWAY)
    kind, colon, rest = text.partition(":")
    kinds = ", ".join(f"{k.value}:..." for k in ScopeKind if k is not ScopeKind.GATEWAY)
    if not colon or kind not in ScopeKind.__members__.values() or kind == ScopeKind.GATEWAY:
        raise ValueError(f"{text!r} is not a scope: expected gateway, {kinds}")
    if kind == ScopeKind.TAG:
        tag, equals, value = rest.partition("=")
        if not equals or not tag or not value:
            raise ValueError(f"{text!r}: a tag scope is tag:KEY=VALUE")
        return Scope(ScopeKind.TAG, value, tag)
    if not rest:
        raise ValueError(f"{text!r}: the {kind} is missing after the colon")
    return Scope(ScopeKind(kind), rest)
