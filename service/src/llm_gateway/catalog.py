"""The model catalog: every model the gateway can serve, with its limits, capabilities and prices."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from llm_gateway.config.schema import GatewayConfig, ModelConfig, ProviderConfig
from llm_gateway.pricing import (
    BillingModel,
    CostCapabilities,
    PriceSheet,
    PricingStatus,
    sheet_from_catalog,
    sheet_from_config,
)
from llm_gateway.tokens import encoding_for_model

_UNLISTED_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str  # "provider:model", the gateway's name for the model
    provider: str
    name: str  # the provider's name for the model
    display_name: str
    context_window: int | None
    max_output_tokens: int | None
    # None for unlisted models: the gateway does not know, so it leaves checks to the provider.
    capabilities: frozenset[str] | None
    price: PriceSheet
    listed: bool = True
    # The offline encoding that counts its tokens exactly ("o200k_base", ...); "" approximates.
    tokenizer: str = ""
    # Configured fallbacks ('provider:model' or aliases), tried after the request's own.
    fallbacks: tuple[str, ...] = ()

    def supports(self, capability: str) -> bool:
        return self.capabilities is None or capability in self.capabilities


class Catalog:
    """Models of the enabled providers. Built once at start-up; prices are resolved then."""

    def __init__(self, config: GatewayConfig, enabled: Mapping[str, ProviderConfig]) -> None:
        self._enabled = dict(enabled)
        self._listed: dict[str, ModelSpec] = {}
        for provider, pconf in self._enabled.items():
            for key, mconf in pconf.models.items():
                spec = _spec(provider, pconf, key, mconf)
                self._listed[spec.id] = spec
        self._costs = {
            provider: _cost_capabilities(pconf, [s for s in self._listed.values() if s.provider == provider])
            for provider, pconf in self._enabled.items()
        }
        self._unlisted: OrderedDict[str, ModelSpec] = OrderedDict()
        self._aliases: dict[str, list[str]] = {}
        for alias, target in config.aliases.items():
            self._aliases.setdefault(target, []).append(alias)

    def listed(self) -> list[ModelSpec]:
        return sorted(self._listed.values(), key=lambda s: s.id)

    def cost_capabilities(self, provider: str) -> CostCapabilities:
        return self._costs[provider]

    def aliases_of(self, model_id: str) -> list[str]:
        return sorted(self._aliases.get(model_id, ()))

    def is_enabled(self, provider: str) -> bool:
        return provider in self._enabled

    def get(self, provider: str, model: str) -> ModelSpec | None:
        """The spec of `provider:model`, building one for an unlisted model where allowed."""
        model_id = f"{provider}:{model}"
        spec = self._listed.get(model_id)
        if spec is not None:
            return spec
        pconf = self._enabled.get(provider)
        if pconf is None or not pconf.allow_unlisted_models:
            return None
        spec = self._unlisted.get(model_id)
        if spec is None:
            spec = _spec(provider, pconf, model, None)
            self._unlisted[model_id] = spec
            if len(self._unlisted) > _UNLISTED_CACHE_SIZE:
                self._unlisted.popitem(last=False)
        else:
            self._unlisted.move_to_end(model_id)
        return spec

    def find_by_name(self, model: str) -> list[ModelSpec]:
        """Listed models whose gateway name (the part after "provider:") is `model`."""
        return [s for s in self._listed.values() if s.id.partition(":")[2] == model]


def _spec(provider: str, pconf: ProviderConfig, key: str, mconf: ModelConfig | None) -> ModelSpec:
    name = (mconf.name if mconf else None) or key
    catalog_provider = pconf.price_catalog_provider or pconf.kind
    if mconf is not None and mconf.price is not None:
        price = sheet_from_config(mconf.price)
    elif pconf.free:
        price = PriceSheet(status=PricingStatus.FREE, source="config")
    else:
        price = sheet_from_catalog(catalog_provider, name)
    return ModelSpec(
        id=f"{provider}:{key}",
        provider=provider,
        name=name,
        display_name=(mconf.display_name if mconf else "") or key,
        context_window=mconf.context_window if mconf else None,
        max_output_tokens=mconf.max_output_tokens if mconf else None,
        capabilities=frozenset(mconf.capabilities) if mconf else None,
        price=price,
        listed=mconf is not None,
        tokenizer=_tokenizer(pconf, name, mconf),
        fallbacks=mconf.fallbacks if mconf else (),
    )


def _cost_capabilities(pconf: ProviderConfig, listed: list[ModelSpec]) -> CostCapabilities:
    """The provider's declaration (its kind's or preset's, or its config's), with request fees
    and the billing model read from its models' prices."""
    fees = any(spec.price.per_request > 0 for spec in listed)
    models = {spec.price.billing_model for spec in listed} - {None, BillingModel.FREE}
    if pconf.free:
        billing = BillingModel.FREE
    elif models == {BillingModel.PER_REQUEST}:
        billing = BillingModel.PER_REQUEST
    else:
        billing = BillingModel.HYBRID if fees else BillingModel.PER_TOKEN
    return CostCapabilities(pconf.tracks_tokens, pconf.token_caching, fees, billing)


# Kinds whose models are OpenAI's own, so OpenAI's encodings count them exactly.
_OPENAI_KINDS = frozenset({"openai", "azure_openai"})


def _tokenizer(pconf: ProviderConfig, name: str, mconf: ModelConfig | None) -> str:
    chosen = mconf.tokenizer if mconf else None
    if chosen is not None:
        return "" if chosen == "approximate" else chosen
    if pconf.kind in _OPENAI_KINDS:
        return encoding_for_model(name) or ""
    return ""
