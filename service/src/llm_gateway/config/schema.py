"""The configuration schema. Every table rejects unknown keys, so a typo is an error that names it."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from llm_gateway.domain.messages import CapabilityName

# Presets of the openai_compatible kind, by name (presets.toml).
COMPATIBLE_PRESETS: dict[str, dict[str, Any]] = tomllib.loads(
    files("llm_gateway.config").joinpath("presets.toml").read_text("utf-8")
)

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url.rstrip("/")


# A provider's base URL: http(s), kept without a trailing slash.
BaseUrl = Annotated[str, AfterValidator(_http_url)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "[::]"
    port: int = Field(default=50051, ge=0, le=65535)  # 0 picks a free port
    # Seconds in-flight calls and streams get to finish after SIGTERM/SIGINT.
    grace_period: float = Field(default=10.0, ge=0)
    # Largest request accepted; inline images make requests big.
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Worker processes sharing the port (SO_REUSEPORT); about one per core. 1 serves in-process.
    workers: int = Field(default=1, ge=1, le=256)
    # Calls (per worker) that may wait for the server to pick them up in a burst; past this, gRPC
    # refuses them before the gateway sees them.
    max_pending_calls: int = Field(default=20_000, ge=1, le=1_000_000)
    # The event loop each serving process runs: uvloop (measured cheaper per call here, bench/NOTES.md)
    # or the standard library's.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"


class HttpConfig(_Strict):
    """The HTTP door (OpenAI- and Anthropic-compatible APIs, health): docs/http.md."""

    enabled: bool = True
    host: str = "[::]"
    port: int = Field(default=8080, ge=0, le=65535)  # 0 picks a free port


class MetricsConfig(_Strict):
    """Prometheus metrics (docs/monitoring.md): `GET /metrics` on the HTTP door, or on a port of
    their own."""

    enabled: bool = True
    # None: served by the HTTP door; a port (0: any free one): a listener of its own on `host`.
    port: int | None = Field(default=None, ge=0, le=65535)
    host: str = "[::]"


class TracingConfig(_Strict):
    """OpenTelemetry traces over OTLP (docs/monitoring.md#traces). Also on when the standard
    `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED`."""

    enabled: bool = False
    # "grpc" or "http/protobuf"; unset: OTEL_EXPORTER_OTLP_PROTOCOL, else "grpc".
    protocol: Literal["grpc", "http/protobuf"] | None = None
    # The collector's URL; unset: the OTEL_EXPORTER_OTLP_* variables, else the exporter's default.
    endpoint: str | None = None
    # The share of calls traced when the caller's traceparent does not decide.
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # Prompts and replies on the attempt spans (`gen_ai.input.messages`, `gen_ai.output.messages`);
    # also on with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true. Off: never recorded.
    capture_content: bool = False


class RateLimitConfig(_Strict):
    """Requests and tokens per minute (leaky buckets: a full minute's worth may go at once). A call
    acquires one request and its estimated tokens (prompt and expected output)."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    # The longest a call waits in line before RESOURCE_EXHAUSTED (or its next candidate).
    max_wait: float = Field(default=5.0, ge=0, le=300)


class QuotaConfig(_Strict):
    """A key's requests and tokens per calendar minute, hour or day (in `budgets.time_zone`), held
    across every worker in the ledger's database. A call takes one request and reserves its prompt
    plus its `max_tokens` (or the model's maximum output), and settles at the tokens it used."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    requests_per_hour: int | None = Field(default=None, ge=1)
    requests_per_day: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_hour: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)

    def limits(self) -> list[tuple[Literal["requests", "tokens"], Literal["minute", "hour", "day"], int]]:
        """The quotas set, as (what, per, limit)."""
        found: list[tuple[Literal["requests", "tokens"], Literal["minute", "hour", "day"], int]] = []
        for what in ("requests", "tokens"):
            for per in ("minute", "hour", "day"):
                limit = getattr(self, f"{what}_per_{per}")
                if limit is not None:
                    found.append((what, per, limit))
        return found


class ApiKeyConfig(_Strict):
    """A gateway API key: give the key itself (normally `${ENV}`) or its SHA-256 hex digest."""

    name: str = Field(min_length=1, max_length=64)
    key: SecretStr | None = None
    sha256: str | None = None
    # The calls this key may make (Chat and ChatStream); unset: no limit.
    rate_limit: RateLimitConfig | None = None
    # Requests and tokens per minute, hour or day across every worker (docs/budgets.md).
    quota: QuotaConfig | None = None
    # "admin" sees every caller's usage; "user" only its own key's.
    role: Literal["admin", "user"] = "user"
    # The models this key may use: "provider:model", or "provider:*" for all of a provider's; and
    # whole providers. Both empty: every model. Any other is PERMISSION_DENIED, and ListModels
    # shows the key only these.
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()

    @field_validator("models")
    @classmethod
    def _model_patterns(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        for i, model in enumerate(models):
            provider, sep, name = model.partition(":")
            if not sep or not provider or not name or any(c.isspace() for c in model):
                raise ValueError(f"models[{i}]: {model!r} is not 'provider:model' or 'provider:*'")
        return models

    @model_validator(mode="after")
    def _one_form(self) -> ApiKeyConfig:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("set exactly one of 'key' and 'sha256'")
        if self.key is not None and len(self.key.get_secret_value()) < 16:
            raise ValueError("'key' must be at least 16 characters")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError("'sha256' must be 64 lowercase hex characters")
        return self


class AuthConfig(_Strict):
    # No keys: authentication is off (the gateway logs a warning at start).
    keys: tuple[ApiKeyConfig, ...] = ()

    @field_validator("keys")
    @classmethod
    def _unique_names(cls, keys: tuple[ApiKeyConfig, ...]) -> tuple[ApiKeyConfig, ...]:
        names = [k.name for k in keys]
        if len(names) != len(set(names)):
            raise ValueError("key names must be unique")
        return keys


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True


class LedgerConfig(_Strict):
    """The usage ledger: one row per call (docs/ledger.md)."""

    enabled: bool = True
    # sqlite:///relative/path.db, sqlite:////absolute/path.db, or postgresql://user:pw@host/db.
    # Secret (it may hold a password): shown only without it.
    url: SecretStr = SecretStr("sqlite:///var/ledger.db")
    # A batch is written as soon as this many calls wait, or flush_interval seconds after the
    # first of them arrived; what a kill -9 can lose is about one interval of calls.
    flush_interval: float = Field(default=0.1, gt=0, le=60)
    batch_size: int = Field(default=100, ge=1, le=100_000)
    # Calls held in memory while the database and the spool are both failing; past it they are
    # lost (counted and logged).
    queue_size: int = Field(default=10_000, ge=1, le=10_000_000)
    # Where calls wait while the database is down or slow; replayed when it is back.
    spool_dir: Path = Path("var/ledger-spool")
    # A write slower than this goes to the spool instead (and a SQLite lock is waited for this long).
    write_timeout: float = Field(default=3.0, gt=0, le=300)
    # Calls older than this many days are removed (checked hourly); 0 keeps them forever.
    retention_days: int = Field(default=400, ge=0, le=36_500)
    # PostgreSQL: connections per worker process for the ledger, and as many again for budgets and
    # quotas. A fleet opens up to replicas x workers x 2 x pool_size: keep that under the server's
    # max_connections (docs/deployment.md).
    pool_size: int = Field(default=4, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: SecretStr) -> SecretStr:
        from llm_gateway.ledger.url import parse_url  # here: the ledger package imports the config

        parse_url(url.get_secret_value())
        return url

    @model_validator(mode="after")
    def _batch_fits(self) -> LedgerConfig:
        if self.batch_size > self.queue_size:
            raise ValueError("batch_size must not exceed queue_size")
        return self


_BUDGET_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def _budget_id(value: str) -> str:
    if not _BUDGET_ID.match(value):
        raise ValueError("must be 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
    return value


def _scope_text(value: str) -> str:
    from llm_gateway.budgets.scope import parse_scope  # here: the budgets package imports the config

    parse_scope(value)
    return value


def _time_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (for example 'Europe/Paris')") from None
    return value


BudgetId = Annotated[str, AfterValidator(_budget_id)]
ScopeText = Annotated[str, AfterValidator(_scope_text)]
Percent = Annotated[Decimal, Field(gt=0, le=1000)]


class BudgetLimitConfig(_Strict):
    """A spend limit over a period (docs/budgets.md)."""

    id: BudgetId
    # key:NAME, user:ID, project:ID, tenant:ID, tag:KEY=VALUE or gateway.
    scope: ScopeText
    limit_usd: Decimal = Field(ge=0, max_digits=30, decimal_places=18)
    period: Literal["hour", "day", "week", "month", "none"] = "month"
    # Percentages of the limit whose crossing raises one alert per period, e.g. [50, 80, 100].
    thresholds: tuple[Percent, ...] = ()

    @field_validator("thresholds")
    @classmethod
    def _distinct(cls, thresholds: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        if len(set(thresholds)) != len(thresholds):
            raise ValueError("thresholds must be distinct")
        return tuple(sorted(thresholds))


class BudgetsConfig(_Strict):
    """Budgets and key quotas, counted in the ledger's database (docs/budgets.md)."""

    # The calendar periods are aligned to, an IANA name.
    time_zone: Annotated[str, AfterValidator(_time_zone)] = "UTC"
    # A call under a budget to a model without a known price: refused, or let through uncounted.
    unknown_prices: Literal["refuse", "allow"] = "refuse"
    # A reservation whose process died stops holding budget after this long (longer than the
    # longest call: a call outliving its reservation still settles, but is no longer held for).
    reservation_ttl: float = Field(default=1800.0, ge=1, le=7 * 86_400)
    # How often a worker reads budgets other workers created or changed through BudgetService.
    refresh_interval: float = Field(default=2.0, gt=0, le=3600)
    # While the budget store (the ledger's database) cannot be reached: "refuse" fails the calls a
    # budget or quota covers (UNAVAILABLE / BUDGET_STORE_UNAVAILABLE); "allow" lets them through
    # until this process has let `local_allowance_usd` of worst cases through under one budget,
    # and counts their spend in the store once it is back.
    when_store_down: Literal["refuse", "allow"] = "refuse"
    local_allowance_usd: Decimal = Field(default=Decimal(1), ge=0, max_digits=30, decimal_places=18)
    limits: tuple[BudgetLimitConfig, ...] = ()

    @field_validator("limits")
    @classmethod
    def _unique_ids(cls, limits: tuple[BudgetLimitConfig, ...]) -> tuple[BudgetLimitConfig, ...]:
        ids = [b.id for b in limits]
        if len(ids) != len(set(ids)):
            raise ValueError("budget ids must be unique")
        return limits


class WebhookConfig(_Strict):
    """Where alerts are POSTed, signed with `secret` (docs/budgets.md#webhooks)."""

    name: str = Field(pattern=_NAME.pattern)
    url: SecretStr  # may carry a token in its path or query: never logged
    secret: SecretStr
    # What it is told of: budget and call cost alerts, and batches that ended (docs/batches.md).
    events: tuple[Literal["cost_alert", "batch_completed"], ...] = ("cost_alert",)
    # A delivery still failing this long after the alert is given up (logged as an error).
    max_age: float = Field(default=3 * 86_400.0, gt=0, le=30 * 86_400)

    @field_validator("url")
    @classmethod
    def _http(cls, url: SecretStr) -> SecretStr:
        _http_url(url.get_secret_value())
        return url

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return secret


class RoutingWeightsConfig(_Strict):
    """The `auto` strategy's weights (docs/routing.md); they need not add up to 1."""

    cost: float = Field(default=0.4, ge=0)
    speed: float = Field(default=0.3, ge=0)
    quality: float = Field(default=0.3, ge=0)


class RoutingConfig(_Strict):
    # Candidates for model "auto" without routing options, in order of preference; models of
    # disabled providers are skipped.
    auto: tuple[str, ...] = ("mock:echo",)
    # Quality scores for the "quality" and "auto" strategies: "provider:model" -> 0 (worst) to 1.
    quality: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    weights: RoutingWeightsConfig = RoutingWeightsConfig()
    # The share of "speed" and "auto" choices that try a model without recent latency first, so
    # the gateway learns how fast it is.
    exploration: float = Field(default=0.1, ge=0, le=1)


class DeploymentConfig(_Strict):
    # "provider:model": one deployment of the group's model (a provider entry has its own key,
    # limits and circuit).
    model: str = Field(min_length=3, max_length=256)
    # Its share of the calls under the "weighted" policy; 0 is a standby, used only when every
    # other deployment cannot take the call.
    weight: int = Field(default=1, ge=0, le=1000)


class ModelGroupConfig(_Strict):
    """One model name for several deployments of the same model (docs/routing.md)."""

    # weighted: random, in proportion to the weights; least_busy: the fewest calls in flight (in
    # this process); latency: the faster of two chosen at random (power of two choices).
    policy: Literal["weighted", "least_busy", "latency"] = "weighted"
    deployments: tuple[DeploymentConfig, ...] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _distinct(self) -> ModelGroupConfig:
        models = [d.model for d in self.deployments]
        if len(models) != len(set(models)):
            raise ValueError("deployments: each model may appear once")
        if self.policy == "weighted" and not any(d.weight for d in self.deployments):
            raise ValueError("deployments: at least one weight must be above 0")
        return self


class TaskConfig(_Strict):
    """A task callers may name instead of a model (`ChatRequest.task_type`)."""

    # What serves it, tried in order: "provider:model", aliases, model groups or "auto".
    models: tuple[str, ...] = Field(min_length=1, max_length=16)


class RateTierConfig(_Strict):
    # The whole call is charged `price` once its prompt has more than `start` tokens.
    start: int = Field(ge=0)
    price: Decimal = Field(ge=0)


class RateConfig(_Strict):
    """A price per million tokens with long-context tiers, charged as the catalog's are: the whole
    call at the price of the highest tier its prompt is above, else at `base`."""

    base: Decimal = Field(ge=0)
    tiers: tuple[RateTierConfig, ...] = ()

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: tuple[RateTierConfig, ...]) -> tuple[RateTierConfig, ...]:
        for i in range(1, len(tiers)):
            if tiers[i].start <= tiers[i - 1].start:
                raise ValueError(
                    f"tier starts must ascend and differ: tiers[{i}].start {tiers[i].start} follows "
                    f"{tiers[i - 1].start}"
                )
        return tiers


_PRICE = TypeAdapter(Annotated[Decimal, Field(ge=0)])


def _per_million(value: Any) -> Decimal | RateConfig:
    """A plain decimal, or a `{ base, tiers }` table. Validated here rather than as a union, so an
    error names the field's own keys ("tiers[1].start") instead of the union's members."""
    try:
        if isinstance(value, RateConfig):
            return value
        if isinstance(value, dict):
            return RateConfig.model_validate(value)
        return _PRICE.validate_python(value)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where.lstrip('.')}: {message}" if where else message)
        raise ValueError("; ".join(problems)) from None


# A price per million tokens: "1.25", or { base = "1.25", tiers = [{ start = 200000, price = "2.50" }] }.
PerMillion = Annotated[Decimal | RateConfig, PlainValidator(_per_million)]


class PriceConfig(_Strict):
    """A configured price (negotiated, or for a model the price catalog lacks), in USD."""

    free: bool = False
    input_per_million: PerMillion | None = None
    cached_input_per_million: PerMillion | None = None
    cache_write_per_million: PerMillion | None = None
    cache_write_1h_per_million: PerMillion | None = None
    output_per_million: PerMillion | None = None
    per_request: Decimal | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> PriceConfig:
        amounts = (
            self.input_per_million,
            self.cached_input_per_million,
            self.cache_write_per_million,
            self.cache_write_1h_per_million,
            self.output_per_million,
            self.per_request,
        )
        if self.free and any(a is not None for a in amounts):
            raise ValueError("a free model has no prices")
        if not self.free and all(a is None for a in amounts):
            raise ValueError("give 'free = true' or at least one price")
        return self


class PriceFileError(ValueError):
    """An operator price file that cannot be used; the message names the file and the field."""


def read_price_file(path: Path) -> dict[str, PriceConfig]:
    """An operator's prices by 'provider:model', each table a model's `price`. Errors name the
    file, the model and the field, never a value."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise PriceFileError(f"cannot read price file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceFileError(f"price file {path} is not valid TOML: {exc}") from None
    prices: dict[str, PriceConfig] = {}
    problems: list[str] = []
    for key, table in data.items():
        provider, _, model = key.partition(":")
        if not provider or not model or any(ch.isspace() for ch in key):
            problems.append(f"{key!r} is not 'provider:model'")
            continue
        try:
            prices[key] = PriceConfig.model_validate(table)
        except ValidationError as exc:
            for error in exc.errors():
                field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
                problems.append(f'"{key}"{field}: {error["msg"].removeprefix("Value error, ")}')
    if problems:
        raise PriceFileError(f"price file {path}: {'; '.join(problems)}")
    return prices


class PricingConfig(_Strict):
    # An operator's price file (TOML: a `price` table per 'provider:model'), re-read on SIGHUP. Its
    # prices win over the models' configured `price` and the catalog. "" counts as unset.
    file: Annotated[Path | None, BeforeValidator(lambda path: path or None)] = None

    @field_validator("file")
    @classmethod
    def _valid_file(cls, path: Path | None) -> Path | None:
        if path is not None:
            read_price_file(path)  # so check-config and start-up refuse a file a reload would
        return path


class ModelConfig(_Strict):
    """A catalog entry: a model the provider serves, keyed by its gateway name."""

    name: str | None = None  # the provider's model name; defaults to the table key
    display_name: str = ""
    context_window: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    capabilities: tuple[CapabilityName, ...] = ("streaming",)
    price: PriceConfig | None = None
    # How tokens are counted for estimates, budgets and usage a provider did not report: an OpenAI
    # encoding (exact), the server that runs the model ("server": its tokenize endpoint, named by
    # the provider's dialect `tokenize`), or the documented approximation. Unset: the encoding
    # OpenAI uses for the model on the openai and azure_openai kinds, the server where the dialect
    # names a tokenize endpoint, the approximation everywhere else.
    tokenizer: Literal["o200k_base", "cl100k_base", "server", "approximate"] | None = None
    # Models ('provider:model' or aliases) tried in order when this one fails with a retryable
    # error, after the request's own fallback_models; those of disabled providers are skipped.
    fallbacks: tuple[str, ...] = ()


class TimeoutConfig(_Strict):
    """Upstream timeouts in seconds, per attempt; the caller's gRPC deadline bounds them further."""

    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=300.0, gt=0)  # the longest silence between two upstream bytes
    pool: float = Field(default=10.0, gt=0)  # waiting for a free pooled connection
    # A stream's first event (text, tool call or its end); reasoning models think before it.
    first_token: float = Field(default=300.0, gt=0)
    # A whole attempt, unary reply or stream, from sending the request to the last byte.
    total: float = Field(default=900.0, gt=0)


class RetryConfig(_Strict):
    """Retries of the same model after a retryable failure, before the next candidate is tried."""

    max_retries: int = Field(default=2, ge=0, le=10)
    # Exponential backoff with full jitter: retry n waits a random time in
    # [0, min(max_backoff, initial_backoff * 2**n)].
    initial_backoff: float = Field(default=0.5, ge=0, le=60)
    max_backoff: float = Field(default=8.0, ge=0, le=300)
    # A provider's Retry-After is honoured up to this many seconds; asked to wait longer, the
    # gateway moves on to the next candidate instead.
    max_retry_after: float = Field(default=10.0, ge=0, le=300)


class CircuitBreakerConfig(_Strict):
    """When a provider's circuit opens, and how long it stays open before one probe call."""

    # Consecutive failures (5xx, 529, timeouts, unreachable, broken replies) that open it.
    failure_threshold: int = Field(default=5, ge=1, le=10_000)
    # Seconds the circuit stays open before a single probe call is let through.
    reset_timeout: float = Field(default=30.0, gt=0, le=86_400)
    # One caller's failures alone do not open the circuit while another caller was served by the
    # provider within this many seconds (its requests, not the provider, may be what fails).
    caller_window: float = Field(default=60.0, ge=0, le=86_400)


class SubscriptionConfig(_Strict):
    """A flat fee per period for everything the provider serves (provisioned throughput, a
    flat-rate plan), optionally with a token quota past which calls pay the models' own prices
    (docs/subscriptions.md)."""

    fee_usd: Decimal = Field(ge=0, max_digits=30, decimal_places=18)
    # Calendar periods in budgets.time_zone, as budgets count them.
    period: Literal["hour", "day", "week", "month"] = "month"
    # Tokens (input and output) the fee covers each period; unset: every call is covered.
    included_tokens: int | None = Field(default=None, ge=1)
    # What tokens past the quota cost, for every model of the provider; unset: each model's own price.
    overage: PriceConfig | None = None

    @model_validator(mode="after")
    def _overage_needs_a_quota(self) -> SubscriptionConfig:
        if self.overage is not None and self.included_tokens is None:
            raise ValueError("overage prices the tokens past included_tokens: set included_tokens too")
        return self


class _ProviderBase(_Strict):
    # None: on when the provider needs no API key or its key is set.
    enabled: bool | None = None
    timeout: TimeoutConfig = TimeoutConfig()
    retry: RetryConfig = RetryConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    # The gateway's own pace for this provider (the provider's 429 Retry-After pauses it too).
    rate_limit: RateLimitConfig = RateLimitConfig()
    # Accept "provider:model" for models not listed under `models` (priced from the catalog if known).
    allow_unlisted_models: bool = True
    # The provider id in the price catalog (genai-prices); defaults to the provider kind.
    price_catalog_provider: str | None = None
    # Every model of this provider costs nothing (local servers); a model's own `price` still wins.
    free: bool = False
    # Cost capabilities (ListModels shows them): replies carry token counts, and the provider
    # caches prompts and reports cached tokens. Each kind and preset sets what its API does.
    tracks_tokens: bool = True
    token_caching: bool = False
    # Billed by a flat fee per period instead of per call (docs/subscriptions.md).
    subscription: SubscriptionConfig | None = None
    models: dict[str, ModelConfig] = {}

    @field_validator("models")
    @classmethod
    def _model_keys(cls, models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        for key in models:
            if not key or any(ch.isspace() for ch in key) or len(key) > 200:
                raise ValueError(f"model name {key!r} must be 1 to 200 non-space characters")
        return models

    @model_validator(mode="after")
    def _server_tokenizer(self) -> _ProviderBase:
        """`tokenizer = "server"` needs a server that counts: only a compatible server's dialect
        names a tokenize endpoint."""
        dialect = getattr(self, "dialect", None)
        if dialect is None or dialect.tokenize == "none":
            for key, model in self.models.items():
                if model.tokenizer == "server":
                    raise ValueError(
                        f"models.{key}: tokenizer 'server' needs a dialect whose 'tokenize' names the "
                        "server's tokenize endpoint"
                    )
        return self


class MockProviderConfig(_ProviderBase):
    """The built-in deterministic provider: no network, for integration tests and demos."""

    kind: Literal["mock"]
    allow_unlisted_models: bool = False
    # Pause between streamed chunks, to simulate a slow model.
    chunk_delay: float = Field(default=0.0, ge=0, le=60)


# Which of OpenAI's APIs serves a model: Chat Completions, or the Responses API (`/responses`).
OpenAIApi = Literal["chat_completions", "responses"]


class OpenAIModelConfig(ModelConfig):
    """An OpenAI catalog entry; `api` overrides the provider's for this model."""

    api: OpenAIApi | None = None


class OpenAIProviderConfig(_ProviderBase):
    """OpenAI: Chat Completions (`POST {base_url}/chat/completions`) or the Responses API
    (`POST {base_url}/responses`)."""

    kind: Literal["openai"]
    base_url: BaseUrl = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    token_caching: bool = True
    organization: str | None = None
    project: str | None = None
    # The API for models that set none; models only the Responses API serves use it regardless.
    api: OpenAIApi = "chat_completions"
    models: dict[str, OpenAIModelConfig] = {}  # type: ignore[assignment]


# What a Chat Completions server may not accept; see ChatCompletionsDialect.unsupported.
CompatFeature = Literal[
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "parallel_tool_calls",
    "tools",
    "images",
    "json_object",
    "json_schema",
    "message_name",
]


class ChatCompletionsDialect(_Strict):
    """How one server's Chat Completions differs from OpenAI's. Every quirk the gateway handles is
    a field here, so another compatible server is a config entry, not code."""

    # The output limit field: OpenAI's current name, or the older `max_tokens` most servers take.
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    # The seed field (Mistral: random_seed).
    seed_field: str = Field(default="seed", pattern=r"^[a-z_]{1,40}$")
    # The tool_choice value meaning "must call a tool" (Mistral: any).
    tool_choice_required: Literal["required", "any"] = "required"
    # Send stream_options.include_usage (servers that reject it report usage without it, or not
    # at all, in which case the gateway estimates and marks it).
    stream_usage: bool = True
    # Accepts top_k (OpenAI does not; vLLM, llama.cpp and others do).
    top_k: bool = False
    # How reasoning is controlled: `reasoning_effort` with the given levels, OpenRouter's
    # `reasoning` object, or not at all.
    reasoning: Literal["reasoning_effort", "openrouter", "none"] = "reasoning_effort"
    reasoning_efforts: tuple[Literal["none", "minimal", "low", "medium", "high"], ...] = (
        "none",
        "minimal",
        "low",
        "medium",
        "high",
    )
    # xAI counts reasoning tokens outside completion_tokens; the gateway's completion includes them.
    reasoning_in_completion: bool = True
    # Request settings the server does not accept.
    unsupported: tuple[CompatFeature, ...] = ()
    # The `content` of an assistant turn that has tool calls and no text: OpenAI's `null`, or ""
    # for servers whose request schema takes only a string there (llama-cpp-python answers HTTP
    # 500 to a null).
    empty_assistant_content: Literal["null", "empty_string"] = "null"
    # How a JSON Schema response format is sent: OpenAI's
    # `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`, or
    # `{"type": "json_object", "schema": {...}}`, the form llama-cpp-python takes (its
    # response_format type is "text" or "json_object" only).
    json_schema_format: Literal["json_schema", "json_object_schema"] = "json_schema"
    # The server's tokenize endpoint, which counts tokens with the model's own tokenizer for
    # estimates and for usage the server did not report: llama.cpp's server (`POST /apply-template`
    # then `POST /tokenize`), llama-cpp-python's (`POST /extras/tokenize/count`), or none. Both
    # live at the server's root, `base_url` without its trailing `/v1`.
    tokenize: Literal["none", "llama_cpp", "llama_cpp_python"] = "none"
    # Documentation only: the server, and its version where it has one, whose documentation or
    # source this dialect was written from (shown in docs/providers.md).
    checked_against: str = ""


class AzureModelConfig(OpenAIModelConfig):
    """An Azure OpenAI catalog entry: `name` is the underlying OpenAI model (it sets the price),
    `deployment` the deployment that serves it (defaults to `name`)."""

    deployment: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")


class AzureOpenAIProviderConfig(_ProviderBase):
    """Azure OpenAI Chat Completions
    (`POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`)."""

    kind: Literal["azure_openai"]
    # https://RESOURCE.openai.azure.com; "" (an unset "${AZURE_OPENAI_ENDPOINT:-}") counts as unset.
    endpoint: Annotated[BaseUrl | None, BeforeValidator(lambda url: url or None)] = None
    api_key: SecretStr | None = None
    token_caching: bool = True
    api_version: str = Field(default="2024-10-21", pattern=r"^\d{4}-\d{2}-\d{2}(-preview)?$")
    # genai-prices lists Azure's own prices under "azure".
    price_catalog_provider: str | None = "azure"
    # As OpenAI's; the Responses API is Azure's v1 API (`{endpoint}/openai/v1/responses`).
    api: OpenAIApi = "chat_completions"
    models: dict[str, AzureModelConfig] = {}  # type: ignore[assignment]

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> AzureOpenAIProviderConfig:
        if self.enabled and self.endpoint is None:
            raise ValueError("'endpoint' is required when the provider is enabled")
        return self


class OpenAICompatibleProviderConfig(_ProviderBase):
    """A server that speaks OpenAI Chat Completions, from a preset (Mistral, Groq, vLLM, ...) or
    configured from scratch with `base_url` and `dialect`. Set fields override the preset's."""

    kind: Literal["openai_compatible"]
    preset: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,40}$")
    base_url: BaseUrl | None = None
    api_key: SecretStr | None = None
    # Local servers take no key; hosted ones are enabled only when their key is set.
    requires_api_key: bool | None = None
    dialect: ChatCompletionsDialect = ChatCompletionsDialect()

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        preset = COMPATIBLE_PRESETS.get(str(data["preset"]))
        if preset is None:
            known = ", ".join(sorted(COMPATIBLE_PRESETS))
            raise ValueError(f"unknown preset {data['preset']!r}; known presets: {known}")
        merged = {**preset, **data}
        if isinstance(data.get("dialect"), dict):
            merged["dialect"] = {**preset.get("dialect", {}), **data["dialect"]}
        return merged

    @model_validator(mode="after")
    def _base_url_set(self) -> OpenAICompatibleProviderConfig:
        if self.base_url is None:
            raise ValueError("'base_url' is required without a preset")
        return self


class AnthropicProviderConfig(_ProviderBase):
    """Anthropic Messages (`POST {base_url}/v1/messages`)."""

    kind: Literal["anthropic"]
    base_url: BaseUrl = "https://api.anthropic.com"
    api_key: SecretStr | None = None
    token_caching: bool = True
    anthropic_version: str = "2023-06-01"
    # Anthropic's prompt caching: "5m" or "1h" marks the cacheable prefix of every call (the tools
    # and the system prompt) with `cache_control` of that lifetime; "off" leaves it to the caller.
    prompt_caching: Literal["off", "5m", "1h"] = "off"


class GeminiProviderConfig(_ProviderBase):
    """Google Gemini API (`POST {base_url}/{api_version}/models/{model}:generateContent`)."""

    kind: Literal["gemini"]
    base_url: BaseUrl = "https://generativelanguage.googleapis.com"
    api_key: SecretStr | None = None
    token_caching: bool = True
    api_version: Literal["v1beta", "v1"] = "v1beta"
    price_catalog_provider: str | None = "google"


class OllamaProviderConfig(_ProviderBase):
    """Ollama's native API (`POST {base_url}/api/chat`, NDJSON streams). Local and free by default;
    set `api_key` for a hosted Ollama that takes a bearer key."""

    kind: Literal["ollama"]
    base_url: BaseUrl = "http://localhost:11434"
    api_key: SecretStr | None = None
    free: bool = True
    # How long Ollama keeps the model loaded after a call, e.g. "5m"; unset: Ollama's default.
    keep_alive: str | None = Field(default=None, pattern=r"^-?\d+(ms|s|m|h)?$")


class CohereProviderConfig(_ProviderBase):
    """Cohere Chat API v2 (`POST {base_url}/v2/chat`)."""

    kind: Literal["cohere"]
    base_url: BaseUrl = "https://api.cohere.com"
    api_key: SecretStr | None = None


_OptionalSecret = Annotated[SecretStr | None, BeforeValidator(lambda value: value or None)]


class BedrockProviderConfig(_ProviderBase):
    """AWS Bedrock's Converse API (`POST {endpoint_url}/model/{modelId}/converse`), signed with
    SigV4 (or a Bedrock API key as a bearer token)."""

    kind: Literal["bedrock"]
    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    # Default: https://bedrock-runtime.{region}.amazonaws.com
    endpoint_url: Annotated[BaseUrl | None, BeforeValidator(lambda url: url or None)] = None
    # Static credentials; without them, `profile` names a profile of the shared AWS files. An
    # empty value (an unset "${AWS_...:-}") counts as unset.
    access_key_id: _OptionalSecret = None
    secret_access_key: _OptionalSecret = None
    session_token: _OptionalSecret = None
    profile: Annotated[str | None, BeforeValidator(lambda name: name or None)] = None
    # A Bedrock API key, sent as a bearer token instead of a signature.
    api_key: _OptionalSecret = None
    token_caching: bool = True
    price_catalog_provider: str | None = "aws"
    # Bedrock's prompt caching: "5m" or "1h" puts a cache point after the system prompt and the
    # tools of every call (models without prompt caching ignore it).
    prompt_caching: Literal["off", "5m", "1h"] = "off"


class VertexProviderConfig(_ProviderBase):
    """Google Vertex AI: Gemini models (`…/publishers/google/models/{model}:generateContent`) and
    Anthropic's Claude (`…/publishers/anthropic/models/{model}:rawPredict`), with OAuth2 tokens."""

    kind: Literal["vertex"]
    # An empty value (an unset "${GOOGLE_CLOUD_PROJECT:-}") counts as unset: the provider is off.
    project: Annotated[str | None, BeforeValidator(lambda name: name or None)] = None
    # A region ("us-central1", "europe-west4") or "global".
    location: str = Field(default="us-central1", pattern=r"^(global|[a-z]+-[a-z]+\d+)$")
    # Default: https://{location}-aiplatform.googleapis.com (https://aiplatform.googleapis.com
    # for "global").
    base_url: Annotated[BaseUrl | None, BeforeValidator(lambda url: url or None)] = None
    # A service-account key or authorized-user file; unset: application-default credentials.
    credentials_file: Annotated[str | None, BeforeValidator(lambda path: path or None)] = None
    token_caching: bool = True
    price_catalog_provider: str | None = "google"
    # For Claude models: as Anthropic's `prompt_caching`.
    prompt_caching: Literal["off", "5m", "1h"] = "off"


_PROVIDER_CLASSES = (
    MockProviderConfig,
    OpenAIProviderConfig,
    OpenAICompatibleProviderConfig,
    AzureOpenAIProviderConfig,
    AnthropicProviderConfig,
    GeminiProviderConfig,
    OllamaProviderConfig,
    CohereProviderConfig,
    BedrockProviderConfig,
    VertexProviderConfig,
)
ProviderConfig = Annotated[
    MockProviderConfig
    | OpenAIProviderConfig
    | OpenAICompatibleProviderConfig
    | AzureOpenAIProviderConfig
    | AnthropicProviderConfig
    | GeminiProviderConfig
    | OllamaProviderConfig
    | CohereProviderConfig
    | BedrockProviderConfig
    | VertexProviderConfig,
    Field(discriminator="kind"),
]
PROVIDER_KINDS = frozenset(
    kind for cls in _PROVIDER_CLASSES for kind in get_args(cls.model_fields["kind"].annotation)
)


class FleetConfig(_Strict):
    """State shared by every replica on Redis (docs/deployment.md): rate limits, Retry-After pauses
    and circuit breakers. Without `redis_url`, each process keeps its own, as one machine needs."""

    # redis://[user:password@]host:port/db or rediss:// (TLS). Secret: it may hold a password.
    redis_url: SecretStr | None = None
    # Keys are namespaced under this prefix, so several gateways may share one Redis.
    key_prefix: str = Field(default="llmgw", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Every Redis call's bound, in seconds: a replica never waits longer on a dead or slow Redis.
    timeout: float = Field(default=0.25, gt=0, le=10)
    # Connections to Redis per process; a call waits (within `timeout`) for a free one.
    max_connections: int = Field(default=64, ge=1, le=10_000)
    # After Redis failed, per-process state is used for this long before Redis is tried again.
    retry_interval: float = Field(default=1.0, gt=0, le=300)
    # Rate limits while Redis is unreachable: "local" (each process keeps its own limits, logged and
    # counted) or "refuse" (calls that a limit covers fail UNAVAILABLE / LIMIT_STORE_UNAVAILABLE).
    limits_when_down: Literal["local", "refuse"] = "local"
    # Circuit breakers while Redis is unreachable: "local" (each process's breaker decides alone)
    # or "refuse" (calls to a provider fail UNAVAILABLE / CIRCUIT_STORE_UNAVAILABLE, so no replica
    # sends calls or probes the fleet cannot count).
    breakers_when_down: Literal["local", "refuse"] = "local"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url


class BatchesConfig(_Strict):
    """How each process runs batches' items (docs/batches.md)."""

    # An item a process runs is held this long, renewed every third of it: when the process dies,
    # the item runs again elsewhere (or after a restart) once its lease has run out.
    lease: float = Field(default=30.0, ge=1, le=3600)
    # How often a process looks for items to start when nothing woke it.
    poll_interval: float = Field(default=0.25, gt=0, le=60)
    # A batch whose next item a budget refused waits this long before it tries again.
    budget_pause: float = Field(default=5.0, gt=0, le=3600)
    # The most items one process runs at once, over every batch.
    max_running: int = Field(default=256, ge=1, le=10_000)
    # The part of each provider's rate limit batches may use, so interactive calls keep the rest.
    provider_share: float = Field(default=0.5, gt=0, le=1)
    # Provider mode: how often a job submitted to a provider's batch API is asked where it stands,
    # and its price as a fraction of the list price (OpenAI's and Anthropic's batch prices are half).
    upstream_poll: float = Field(default=60.0, gt=0, le=3600)
    batch_price: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)


class CacheConfig(_Strict):
    """The response cache (docs/cache.md): exact repeats of a call answered without the provider."""

    # False: no cache at all, whatever calls ask for.
    enabled: bool = True
    # What a call that does not say uses: "off" (the default), "on", "read_only" or "write_only".
    mode: Literal["off", "on", "read_only", "write_only"] = "off"
    # "memory": each process its own LRU bounded by `max_bytes`; "redis": shared by every replica
    # on `fleet.redis_url`.
    backend: Literal["memory", "redis"] = "memory"
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=64 * 1024**3)
    # Seconds a reply is kept, unless the call asks for less or more (up to `max_ttl`).
    ttl: float = Field(default=3600.0, gt=0)
    max_ttl: float = Field(default=7 * 86_400.0, gt=0)
    # Entries are per tenant and per gateway key; true shares them between the keys of a tenant.
    share_across_keys: bool = False
    # A reply larger than this (its JSON form) is not stored.
    max_entry_bytes: int = Field(default=1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _ttl_within_max(self) -> CacheConfig:
        if self.ttl > self.max_ttl:
            raise ValueError("cache.ttl must not exceed cache.max_ttl")
        return self


class GatewayConfig(_Strict):
    server: ServerConfig = ServerConfig()
    http: HttpConfig = HttpConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    auth: AuthConfig = AuthConfig()
    logging: LoggingConfig = LoggingConfig()
    ledger: LedgerConfig = LedgerConfig()
    budgets: BudgetsConfig = BudgetsConfig()
    webhooks: tuple[WebhookConfig, ...] = ()
    routing: RoutingConfig = RoutingConfig()
    pricing: PricingConfig = PricingConfig()
    fleet: FleetConfig = FleetConfig()
    cache: CacheConfig = CacheConfig()
    batches: BatchesConfig = BatchesConfig()
    providers: dict[str, ProviderConfig] = {}
    # alias -> "provider:model"
    aliases: dict[str, str] = {}
    # Model groups: a name callers use as `model`, served by several deployments.
    groups: dict[str, ModelGroupConfig] = {}
    # Tasks callers may name instead of a model, and the models that serve each.
    tasks: dict[str, TaskConfig] = {}

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, providers: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in providers:
            if not _NAME.match(name):
                raise ValueError(f"provider name {name!r} must match {_NAME.pattern}")
        return providers

    @model_validator(mode="after")
    def _redis_cache_needs_redis(self) -> GatewayConfig:
        if self.cache.backend == "redis" and self.fleet.redis_url is None:
            raise ValueError('cache.backend = "redis" needs fleet.redis_url')
        return self

    @model_validator(mode="after")
    def _budgets_need_a_ledger(self) -> GatewayConfig:
        quotas = any(k.quota is not None for k in self.auth.keys)
        if (self.budgets.limits or quotas or self.webhooks) and not self.ledger.enabled:
            raise ValueError(
                "budgets, key quotas and webhooks keep their counters and outbox in the ledger's "
                "database: enable the ledger (ledger.enabled = true)"
            )
        names = [w.name for w in self.webhooks]
        if len(names) != len(set(names)):
            raise ValueError("webhooks: names must be unique")
        return self

    @model_validator(mode="after")
    def _aliases(self) -> GatewayConfig:
        for alias, target in self.aliases.items():
            if ":" in alias or alias == "auto" or not alias or any(c.isspace() for c in alias):
                raise ValueError(f"aliases.{alias}: an alias has no ':' or spaces and is not 'auto'")
            provider, sep, model = target.partition(":")
            if not sep or not model:
                raise ValueError(f"aliases.{alias}: target must be 'provider:model', got {target!r}")
            if provider not in self.providers:
                raise ValueError(f"aliases.{alias}: unknown provider {provider!r}")
        for group, settings in self.groups.items():
            if ":" in group or group == "auto" or not group or any(c.isspace() for c in group):
                raise ValueError(f"groups.{group}: a group's name has no ':' or spaces and is not 'auto'")
            if group in self.aliases:
                raise ValueError(f"groups.{group}: the name is an alias too")
            for i, deployment in enumerate(settings.deployments):
                provider, sep, model = deployment.model.partition(":")
                if not sep or not model or provider not in self.providers:
                    raise ValueError(
                        f"groups.{group}.deployments[{i}].model: {deployment.model!r} is not "
                        "'provider:model' of a configured provider"
                    )
        for provider_name, provider_config in self.providers.items():
            for model_name, model_config in provider_config.models.items():
                for i, fallback in enumerate(model_config.fallbacks):
                    if fallback in self.aliases or fallback in self.groups:
                        continue
                    provider, sep, name = fallback.partition(":")
                    if not sep or not name or provider not in self.providers:
                        raise ValueError(
                            f"providers.{provider_name}.models.{model_name}.fallbacks[{i}]: {fallback!r} is "
                            "not an alias or 'provider:model' of a configured provider"
                        )
        for task, served_by in self.tasks.items():
            if not _NAME.match(task):
                raise ValueError(f"tasks.{task}: a task's name must match {_NAME.pattern}")
            for i, target in enumerate(served_by.models):
                if target == "auto" or target in self.aliases or target in self.groups:
                    continue
                provider, sep, name = target.partition(":")
                if not sep or not name or provider not in self.providers:
                    raise ValueError(
                        f"tasks.{task}.models[{i}]: {target!r} is not 'auto', an alias, a group or "
                        "'provider:model' of a configured provider"
                    )
        for i, candidate in enumerate(self.routing.auto):
            provider, sep, model = candidate.partition(":")
            if not sep or not model or provider not in self.providers:
                raise ValueError(
                    f"routing.auto[{i}]: {candidate!r} is not 'provider:model' of a configured provider"
                )
        return self
