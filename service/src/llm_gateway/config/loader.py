"""Loads configuration: embedded defaults, then a TOML file, then `${ENV}` interpolation, then
`LLM_GATEWAY__SECTION__KEY` environment overrides, then validation."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llm_gateway.config.schema import PROVIDER_KINDS, GatewayConfig

ENV_PREFIX = "LLM_GATEWAY__"
# ${NAME} is required; ${NAME:-fallback} falls back when NAME is unset or empty.
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration problem; the message names the offending key."""


def default_config_text() -> str:
    return resources.files("llm_gateway.config").joinpath("defaults.toml").read_text("utf-8")


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Builds the configuration. `path` adds to (and overrides) the embedded defaults."""
    env = {} if env is None else env
    data = tomllib.loads(default_config_text())
    if path is not None:
        try:
            user = tomllib.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        _drop_replaced_providers(data, user)
        data = _merge(data, user)
    data = _interpolate(data, env, ())
    _apply_overrides(data, env)
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _drop_replaced_providers(defaults: dict[str, Any], user: Mapping[str, Any]) -> None:
    """A provider of another kind under a name the defaults use ("vertex" as a Gemini API
    provider) replaces the default's table instead of merging into it: the two kinds' keys differ."""
    ours = defaults.get("providers")
    theirs = user.get("providers")
    if not isinstance(ours, dict) or not isinstance(theirs, Mapping):
        return
    for name, table in theirs.items():
        default = ours.get(name)
        if (
            isinstance(table, Mapping)
            and isinstance(default, dict)
            and table.get("kind", default.get("kind")) != default.get("kind")
        ):
            del ours[name]


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; every other value (lists included) replaces the default."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _interpolate(value: Any, env: Mapping[str, str], path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, (*path, f"[{i}]")) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        found = env.get(name, "")
        if found:
            return found
        if fallback is not None:
            return fallback
        raise ConfigError(f"config error at {_dotted(path)}: environment variable {name} is not set")

    return _REFERENCE.sub(substitute, value)


def _apply_overrides(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise ConfigError(f"environment override {name}: empty key segment")
        table = data
        for key in keys[:-1]:
            child = table.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment override {name}: {key} is not a table")
            table = child
        table[keys[-1]] = _parse_override(name, raw)


def _parse_override(name: str, raw: str) -> Any:
    # Arrays and inline tables are written in TOML syntax; everything else stays a string and is
    # converted by validation (so "9000" becomes a port and "true" a boolean).
    if not raw.startswith(("[", "{")):
        return raw
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"environment override {name}: not a TOML array or table: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        # Drop the kind tag pydantic inserts into provider paths ("providers.x.openai.base_url").
        if len(loc) > 2 and loc[0] == "providers" and loc[2] in PROVIDER_KINDS:
            del loc[2]
        lines.append(f"config error at {_dotted(tuple(loc))}: {error['msg']}")
    return "\n".join(lines)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path).replace(".[", "[") or "(top level)"
