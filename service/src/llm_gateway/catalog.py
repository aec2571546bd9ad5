"""The model catalog: every model the gateway can serve, with its limits, capabilities and prices."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from llm_gateway.config.schema import (
    GatewayConfig,
    ModelConfig,
    OpenAICompatibleProviderConfig,
    PriceConfig,
    PriceFileError,
    ProviderConfig,
    read_price_file,
)
from llm_gateway.pricing import (
    PRICE_FILE_SOURCE,
    BillingModel,
    Clock,
    CostCapabilities,
    PriceSchedule,
    PriceSheet,
    PricingStatus,
    catalog_schedule,
    sheet_from_config,
)
from llm_gateway.tokens import encoding_for_model, tokenizer_id

_UNLISTED_CACHE_SIZE = 1024
_FREE = PriceSheet(status=PricingStatus.FREE, source="config")
_log = logging.getLogger("llm_gateway.pricing")


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
    # The prices in force when the spec was looked up (`Catalog.get`); a call keeps them.
    price: PriceSheet
    listed: bool = True
    # The offline encoding that counts its tokens exactly ("o200k_base", ...); "" approximates.
    tokenizer: str = ""
    # Configured fallbacks ('provider:model' or aliases), tried after the request's own.
    fallbacks: tuple[str, ...] = ()

    def supports(self, capability: str) -> bool:
        return self.capabilities is None or capability in self.capabilities


class Catalog:
    """Models of the enabled providers, built at start-up.

    A model's prices are a schedule (`PriceSchedule`): every lookup hands out a spec carrying the
    sheet in force at that moment, so a call is priced as of when the gateway received it and
    looked its models up, however long it runs. `reload_prices` re-reads the operator's price
    file; calls in flight keep the specs, and so the prices, they already hold.
    """

    def __init__(
        self, config: GatewayConfig, enabled: Mapping[str, ProviderConfig], *, clock: Clock = time.time
    ) -> None:
        self._enabled = dict(enabled)
        self._clock = clock
        self._price_file = config.pricing.file
        self._aliases: dict[str, list[str]] = {}
        for alias, target in config.aliases.items():
            self._aliases.setdefault(target, []).append(alias)
        self._groups: dict[str, list[str]] = {}
        for group, settings in config.groups.items():
            for deployment in settings.deployments:
                self._groups.setdefault(deployment.model, []).append(group)
        self._load(read_price_file(self._price_file) if self._price_file is not None else {})

    def _load(self, overrides: Mapping[str, PriceConfig]) -> None:
        """Prices every model anew, `overrides` (the price file's) first. The tables are replaced
        whole, with no await in between, so a lookup sees the old prices or the new, never a mix."""
        listed: dict[str, _Priced] = {}
        for provider, pconf in self._enabled.items():
            for key, mconf in pconf.models.items():
                listed[f"{provider}:{key}"] = _priced(provider, pconf, key, mconf, overrides, self._clock)
        specs = [entry.spec() for entry in listed.values()]
        self._costs = {
            provider: _cost_capabilities(pconf, [s for s in specs if s.provider == provider])
            for provider, pconf in self._enabled.items()
        }
        self._overrides = dict(overrides)
        self._listed = listed
        self._unlisted: OrderedDict[str, _Priced] = OrderedDict()

    def reload_prices(self) -> int | None:
        """Re-reads the price file (`pricing.file`) and reprices every model. Returns how many
        prices it holds; None when there is no file or it cannot be used, in which case the
        prices stay as they were. Either way the outcome is logged."""
        path = self._price_file
        if path is None:
            _log.warning({"event": "prices_not_reloaded", "reason": "no price file is configured"})
            return None
        try:
            overrides = read_price_file(path)
        except PriceFileError as exc:
            # The message names the file, model and field, never a value.
            _log.error(
                {"event": "prices_reload_failed", "file": str(path), "error": str(exc), "prices": "unchanged"}
            )
            return None
        self._load(overrides)
        _log.info({"event": "prices_reloaded", "file": str(path), "prices": len(overrides)})
        return len(overrides)

    def listed(self) -> list[ModelSpec]:
        return sorted((entry.spec() for entry in self._listed.values()), key=lambda s: s.id)

    def cost_capabilities(self, provider: str) -> CostCapabilities:
        return self._costs[provider]

    def aliases_of(self, model_id: str) -> list[str]:
        return sorted(self._aliases.get(model_id, ()))

    def groups_of(self, model_id: str) -> list[str]:
        """The model groups `model_id` is a deployment of."""
        return sorted(self._groups.get(model_id, ()))

    def is_enabled(self, provider: str) -> bool:
        return provider in self._enabled

    def is_listed(self, model_id: str) -> bool:
        """Whether `provider:model` is in the catalog (not merely allowed as an unlisted model)."""
        return model_id in self._listed

    def get(self, provider: str, model: str) -> ModelSpec | None:
        """The spec of `provider:model` with the prices in force now, building one for an
        unlisted model where allowed."""
        model_id = f"{provider}:{model}"
        entry = self._listed.get(model_id)
        if entry is not None:
            return entry.spec()
        pconf = self._enabled.get(provider)
        if pconf is None or not pconf.allow_unlisted_models:
            return None
        entry = self._unlisted.get(model_id)
        if entry is None:
            entry = _priced(provider, pconf, model, None, self._overrides, self._clock)
            self._unlisted[model_id] = entry
            if len(self._unlisted) > _UNLISTED_CACHE_SIZE:
                self._unlisted.popitem(last=False)
        else:
            self._unlisted.move_to_end(model_id)
        return entry.spec()

    def find_by_name(self, model: str) -> list[ModelSpec]:
        """Listed models whose gateway name (the part after "provider:") is `model`."""
        return [
            entry.spec() for model_id, entry in self._listed.items() if model_id.partition(":")[2] == model
        ]


class _Priced:
    """A model's spec and its price schedule. The spec is re-issued when the sheet in force
    changes, so a lookup costs a clock read and a comparison, and specs already handed out keep
    the prices they were issued with."""

    __slots__ = ("_spec", "prices")

    def __init__(self, spec: ModelSpec, prices: PriceSchedule) -> None:
        self._spec = spec
        self.prices = prices

    def spec(self) -> ModelSpec:
        sheet = self.prices.now()
        spec = self._spec
        if sheet is not spec.price:
            spec = self._spec = replace(spec, price=sheet)
        return spec


def _priced(
    provider: str,
    pconf: ProviderConfig,
    key: str,
    mconf: ModelConfig | None,
    overrides: Mapping[str, PriceConfig],
    clock: Clock,
) -> _Priced:
    name = (mconf.name if mconf else None) or key
    prices = _schedule(f"{provider}:{key}", pconf, name, mconf, overrides, clock)
    return _Priced(_spec(provider, pconf, key, mconf, prices.now()), prices)


def _schedule(
    model_id: str,
    pconf: ProviderConfig,
    name: str,
    mconf: ModelConfig | None,
    overrides: Mapping[str, PriceConfig],
    clock: Clock,
) -> PriceSchedule:
    """A model's prices, from the first source that has one: the operator's price file (meant to
    correct or override, and the one source that changes without a restart), the model's
    configured `price`, the provider's `free`, then the catalog (by the provider's name for it)."""
    override = overrides.get(model_id)
    if override is not None:
        return PriceSchedule.fixed(sheet_from_config(override, PRICE_FILE_SOURCE))
    if mconf is not None and mconf.price is not None:
        return PriceSchedule.fixed(sheet_from_config(mconf.price))
    if pconf.free:
        return PriceSchedule.fixed(_FREE)
    return catalog_schedule(pconf.price_catalog_provider or pconf.kind, name, clock)


def _spec(
    provider: str, pconf: ProviderConfig, key: str, mconf: ModelConfig | None, price: PriceSheet
) -> ModelSpec:
    name = (mconf.name if mconf else None) or key
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
    if pconf.subscription is not None:
        billing = BillingModel.SUBSCRIPTION
    elif pconf.free:
        billing = BillingModel.FREE
    elif models == {BillingModel.PER_REQUEST}:
        billing = BillingModel.PER_REQUEST
    else:
        billing = BillingModel.HYBRID if fees else BillingModel.PER_TOKEN
    return CostCapabilities(pconf.tracks_tokens, pconf.token_caching, fees, billing)


# Kinds whose models are OpenAI's own, so OpenAI's encodings count them exactly.
_OPENAI_KINDS = frozenset({"openai", "azure_openai"})


def _tokenizer(pconf: ProviderConfig, name: str, mconf: ModelConfig | None) -> str:
    """The model's `ModelSpec.tokenizer`: an encoding, a server that counts (`tokens/server.py`), or
    "" for the approximation. A compatible server whose dialect names a tokenize endpoint counts
    its models unless a model says otherwise."""
    chosen = mconf.tokenizer if mconf else None
    tokenize = pconf.dialect.tokenize if isinstance(pconf, OpenAICompatibleProviderConfig) else "none"
    if chosen == "server" or (chosen is None and tokenize != "none"):
        # The config checks that tokenizer "server" comes with a tokenize endpoint and a base_url.
        assert isinstance(pconf, OpenAICompatibleProviderConfig)
        assert pconf.base_url is not None
        assert tokenize != "none"
        return tokenizer_id(tokenize, pconf.base_url, name)
    if chosen is not None:
        return "" if chosen == "approximate" else chosen
    if pconf.kind in _OPENAI_KINDS:
        return encoding_for_model(name) or ""
    return ""
