"""Who is calling, as a front door establishes it: the gateway key and what it may do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the gateway key's configured name ("" with authentication off), whether it
    is an admin key (sees every caller's usage; with authentication off, everyone is), and the
    models it may use: every model when both lists are empty, else those of `providers` and those
    `models` names ("provider:model", or "provider:*" for all of a provider's)."""

    key: str = ""
    admin: bool = True
    models: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()

    def may_use(self, model_id: str) -> bool:
        """Whether this caller may call `model_id` ("provider:model")."""
        if not self.models and not self.providers:
            return True
        provider = model_id.partition(":")[0]
        return provider in self.providers or model_id in self.models or f"{provider}:*" in self.models


ANONYMOUS = Principal()
