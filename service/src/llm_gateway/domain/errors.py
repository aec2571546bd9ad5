"""Gateway errors: a canonical status code, an UPPER_SNAKE reason and safe metadata (AIP-193).

The servicer turns these into gRPC statuses with `google.rpc.ErrorInfo` details; nothing else in
the gateway knows about gRPC. Messages and metadata never contain secrets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    """The canonical gRPC status codes the gateway answers with (names match grpc.StatusCode)."""

    CANCELLED = "CANCELLED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str  # path in the request, e.g. "messages[0].content[1].image.url"
    description: str


class Violations:
    """A request's violations, collected so that the caller learns of all of them at once."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def note(self, violation: FieldViolation | None) -> bool:
        """Adds `violation` if there is one, and says whether there was."""
        if violation is None:
            return False
        self.items.append(violation)
        return True


class GatewayError(Exception):
    """An error with a status code the caller can act on."""

    def __init__(
        self,
        message: str,
        *,
        code: Code,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        violations: Iterable[FieldViolation] = (),
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.violations = tuple(violations)
        # Another attempt (the same model later, or a fallback model) may succeed.
        self.retryable = retryable


def invalid_request(violations: Iterable[FieldViolation]) -> GatewayError:
    violations = tuple(violations)
    return GatewayError(
        _summary(violations),
        code=Code.INVALID_ARGUMENT,
        reason="INVALID_REQUEST",
        violations=violations,
    )


def invalid_field(field: str, description: str) -> GatewayError:
    return invalid_request([FieldViolation(field, description)])


def deadline_exceeded() -> GatewayError:
    """The caller's deadline passed while the call was running (its upstream request is closed)."""
    return GatewayError(
        "the call's deadline passed before it finished",
        code=Code.DEADLINE_EXCEEDED,
        reason="DEADLINE_EXCEEDED",
    )


def model_not_found(model: str, field: str, why: str) -> GatewayError:
    return GatewayError(
        f"{field}: {why}",
        code=Code.NOT_FOUND,
        reason="MODEL_NOT_FOUND",
        metadata={"field": field, "model": model},
    )


def with_field_prefix(err: GatewayError, prefix: str) -> GatewayError:
    """The same error with every field path under `prefix` (a request nested in another message)."""
    if not err.violations and "field" not in err.metadata:
        return err
    violations = tuple(FieldViolation(_join(prefix, v.field), v.description) for v in err.violations)
    metadata = dict(err.metadata)
    if "field" in metadata:
        metadata["field"] = _join(prefix, metadata["field"])
        message = f"{prefix}{err.message}" if err.message.startswith(err.metadata["field"]) else err.message
    else:
        message = err.message
    return GatewayError(
        _summary(violations) if violations else message,
        code=err.code,
        reason=err.reason,
        metadata=metadata,
        retry_after=err.retry_after,
        violations=violations,
        retryable=err.retryable,
    )


def _summary(violations: tuple[FieldViolation, ...]) -> str:
    return "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in violations)


def _join(prefix: str, field: str) -> str:
    return prefix + field if field else prefix.rstrip(".")
