"""Spend limits over time: which budgets a call falls under (`scope`), and the calendar windows
their spend is counted in (`periods`)."""

from llm_gateway.budgets.periods import Period, Window, window
from llm_gateway.budgets.scope import Scope, ScopeKind, parse_scope

__all__ = ["Period", "Scope", "ScopeKind", "Window", "parse_scope", "window"]
