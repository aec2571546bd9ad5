"""Gateway errors as rich gRPC statuses (AIP-193): ErrorInfo always, BadRequest and RetryInfo
where they apply, and the request id in both the ErrorInfo metadata and the trailers."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from llm_gateway.domain.errors import GatewayError

DOMAIN = "llmgateway.v1"
REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True, slots=True)
class RichStatus:
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def rich_status(err: GatewayError, request_id: str) -> RichStatus:
    code = grpc.StatusCode[err.code.value]
    details = [
        error_details_pb2.ErrorInfo(
            reason=err.reason, domain=DOMAIN, metadata={**err.metadata, "request_id": request_id}
        )
    ]
    if err.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in err.violations
                ]
            )
        )
    if err.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(err.retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=err.message, details=packed))
    return RichStatus(
        code=status.code,
        details=status.details,
        trailing_metadata=(*status.trailing_metadata, (REQUEST_ID_KEY, request_id)),
    )
