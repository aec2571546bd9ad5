"""Server reflection, v1 and v1alpha, so every grpcurl version works.

grpcio-reflection ships only v1alpha. v1 is the same protocol under a new package name, so its
descriptor is derived from v1alpha's at start-up, and one servicer answers both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE = f"{_V1_PACKAGE}.ServerReflection"


def _v1_messages() -> tuple[type[Any], type[Any]]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        reflection_pb2.DESCRIPTOR.CopyToProto(proto)
        old = proto.package
        proto.name, proto.package = _V1_FILE, _V1_PACKAGE
        proto.options.Clear()
        for message in proto.message_type:
            for field in message.field:
                if field.HasField("type_name"):
                    field.type_name = field.type_name.replace(f".{old}.", f".{_V1_PACKAGE}.")
        for service in proto.service:
            for method in service.method:
                method.input_type = method.input_type.replace(f".{old}.", f".{_V1_PACKAGE}.")
                method.output_type = method.output_type.replace(f".{old}.", f".{_V1_PACKAGE}.")
        pool.Add(proto)
    request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_V1_PACKAGE}.ServerReflectionRequest")
    )
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_V1_PACKAGE}.ServerReflectionResponse")
    )
    return request, response


def enable_reflection(server: grpc.aio.Server, services: Sequence[str]) -> None:
    names = [*services, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = reflection.aio.ReflectionServicer(names)  # type: ignore[attr-defined]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1_request, v1_response = _v1_messages()

    async def info(requests: Any, context: Context) -> Any:
        # The v1 and v1alpha messages are wire-identical: convert at the edges.
        async def as_v1alpha() -> Any:
            async for request in requests:
                yield reflection_pb2.ServerReflectionRequest.FromString(request.SerializeToString())

        async for response in servicer.ServerReflectionInfo(as_v1alpha(), context):
            yield v1_response.FromString(response.SerializeToString())

    handler = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                info,
                request_deserializer=v1_request.FromString,
                response_serializer=v1_response.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
