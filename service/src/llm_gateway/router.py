"""Turns the request's `model` and `fallback_models` into an ordered list of candidate models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.config.schema import ModelGroupConfig
from llm_gateway.domain.errors import Code, GatewayError, invalid_field, model_not_found
from llm_gateway.domain.principal import ANONYMOUS, Principal

AUTO = "auto"
_MAX_MODEL_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Route:
    spec: ModelSpec
    reason: str  # "requested", "alias", "auto", "group" or "fallback"


class Router:
    def __init__(
        self,
        catalog: Catalog,
        aliases: Mapping[str, str],
        auto: Sequence[str],
        configured_providers: Sequence[str],
        groups: Mapping[str, ModelGroupConfig] | None = None,
    ) -> None:
        self._catalog = catalog
        self._aliases = dict(aliases)
        self._groups = dict(groups or {})
        self._auto = tuple(auto)
        self._configured = frozenset(configured_providers)

    def plan(
        self,
        model: str,
        fallbacks: Sequence[str] = (),
        field: str = "model",
        principal: Principal = ANONYMOUS,
    ) -> list[Route]:
        """Candidates in the order to try them: the model (or every "auto" choice), the request's
        fallbacks, then the fallbacks configured for the requested models (those of disabled
        providers skipped). A model `principal` may not use is PERMISSION_DENIED where the caller
        named it, and left out where the gateway chose it ("auto", configured fallbacks)."""
        routes = self.resolve(model, field, principal)
        routes.extend(self.fallbacks(fallbacks, field, principal))
        for configured in [f for route in routes if route.reason != "fallback" for f in route.spec.fallbacks]:
            routes.extend(
                Route(spec, "fallback")
                for spec in self._enabled_specs(configured)
                if principal.may_use(spec.id)
            )
        seen: set[str] = set()
        unique = []
        for route in routes:
            if route.spec.id not in seen:
                seen.add(route.spec.id)
                unique.append(route)
        return unique

    def fallbacks(self, fallbacks: Sequence[str], field: str, principal: Principal) -> list[Route]:
        """The request's own fallback models, in order."""
        prefix = field.rpartition(".")[0]
        routes: list[Route] = []
        for i, fallback in enumerate(fallbacks):
            path = f"{prefix}.fallback_models[{i}]" if prefix else f"fallback_models[{i}]"
            routes.extend(Route(r.spec, "fallback") for r in self.resolve(fallback, path, principal))
        return routes

    @property
    def groups(self) -> Mapping[str, ModelGroupConfig]:
        return self._groups

    def available(self, model: str) -> bool:
        """Whether `model` names something that can serve a call now (its provider enabled)."""
        try:
            self._resolve(model, "model")
        except GatewayError:
            return False
        return True

    def group(self, name: str) -> ModelGroupConfig | None:
        """The model group called `name`, if there is one."""
        return self._groups.get(name)

    def resolve(self, model: str, field: str = "model", principal: Principal = ANONYMOUS) -> list[Route]:
        """The candidates `model` names (several for "auto"), those `principal` may use."""
        routes = self._resolve(model, field)
        allowed = [route for route in routes if principal.may_use(route.spec.id)]
        if not allowed:
            refused = routes[0].spec.id if len(routes) == 1 else f"any of the models {model!r} may choose"
            raise GatewayError(
                f"{field}: gateway key {principal.key!r} may not use {refused}",
                code=Code.PERMISSION_DENIED,
                reason="MODEL_NOT_ALLOWED",
                metadata={"field": field, "model": routes[0].spec.id if len(routes) == 1 else model},
            )
        return allowed

    def _resolve(self, model: str, field: str) -> list[Route]:
        if not model:
            raise invalid_field(field, "must be set: 'provider:model', an alias, or 'auto'")
        if len(model) > _MAX_MODEL_LENGTH or any(ch.isspace() for ch in model):
            raise invalid_field(field, f"must be at most {_MAX_MODEL_LENGTH} characters without spaces")
        if model == AUTO:
            return self._auto_routes(field)
        if model in self._aliases:
            return [Route(self._lookup(self._aliases[model], field), "alias")]
        if model in self._groups:
            return self._group_routes(model, field)
        if ":" in model:
            return [Route(self._lookup(model, field), "requested")]
        matches = self._catalog.find_by_name(model)
        if len(matches) == 1:
            return [Route(matches[0], "requested")]
        if len(matches) > 1:
            choices = ", ".join(sorted(s.id for s in matches))
            raise invalid_field(field, f"{model!r} is ambiguous; name the provider: one of {choices}")
        raise model_not_found(model, field, f"unknown model or alias {model!r}; see ListModels")

    def _lookup(self, model_id: str, field: str) -> ModelSpec:
        provider, _, name = model_id.partition(":")
        if not provider or not name:
            raise invalid_field(field, f"{model_id!r} is not 'provider:model'")
        spec = self._catalog.get(provider, name)
        if spec is not None:
            return spec
        if provider not in self._configured:
            why = f"unknown provider {provider!r}"
        elif not self._catalog.is_enabled(provider):
            why = f"provider {provider!r} is not enabled (is its API key set?)"
        else:
            why = f"provider {provider!r} has no model {name!r}"
        raise model_not_found(model_id, field, why)

    def _enabled_specs(self, model: str) -> list[ModelSpec]:
        """The models a configured name stands for (the config checked its form): one model or
        alias, or a group's deployments; those of providers that are not enabled left out."""
        group = self._groups.get(model)
        targets = [d.model for d in group.deployments] if group else [self._aliases.get(model, model)]
        specs = (self._catalog.get(*target.split(":", 1)) for target in targets)
        return [spec for spec in specs if spec is not None]

    def _group_routes(self, name: str, field: str) -> list[Route]:
        """The group's deployments of enabled providers, in configured order (the gateway's
        balancer orders them per call)."""
        routes = [Route(spec, "group") for spec in self._enabled_specs(name)]
        if not routes:
            raise GatewayError(
                f"{field}: no deployment of group {name!r} is available (none of their providers is enabled)",
                code=Code.FAILED_PRECONDITION,
                reason="NO_MODEL_AVAILABLE",
                metadata={"field": field, "model": name},
            )
        return routes

    def _auto_routes(self, field: str) -> list[Route]:
        routes = []
        for candidate in self._auto:
            provider, _, name = candidate.partition(":")
            spec = self._catalog.get(provider, name)
            if spec is not None:
                routes.append(Route(spec, "auto"))
        if not routes:
            raise GatewayError(
                f"{field}: no model is available for 'auto' (routing.auto lists "
                f"{', '.join(self._auto) or 'nothing'}, and none of their providers is enabled)",
                code=Code.FAILED_PRECONDITION,
                reason="NO_MODEL_AVAILABLE",
                metadata={"field": field},
            )
        return routes
