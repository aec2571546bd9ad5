"""Server reflection, v1 and v1alpha, so every grpcurl version works, with the contract's comments.

grpcio-reflection ships only v1alpha. v1 is the same protocol under a new package name, so its
descriptor is derived from v1alpha's at start-up, and one servicer answers both.

The generated *_pb2 modules carry descriptors without source info, so reflection built on them
alone would serve the contract without its comments. `scripts/generate.sh` also compiles the
contract into a FileDescriptorSet with source info (`llmgateway_v1.binpb`, package data), and the
contract's files are served as the runtime's descriptors with that set's comments attached, so
`grpcurl describe` prints the API docs. (Not the set's files as they are: protoc records a
`json_name` for every field, the runtime's descriptors do not, and grpcurl prints JSON field names
from `json_name` when it is there, which would turn its snake_case output into lowerCamelCase.)
Everything else (health, reflection, the well-known types) is served by grpcio-reflection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

_log = logging.getLogger("llm_gateway.server")
_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE = f"{_V1_PACKAGE}.ServerReflection"
DESCRIPTOR_SET = "llmgateway_v1.binpb"


def documented_files() -> descriptor_pb2.FileDescriptorSet:
    """The contract's files compiled with their comments (written by scripts/generate.sh)."""
    data = resources.files("llm_gateway.server").joinpath(DESCRIPTOR_SET).read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)


class _DocumentedReflection:
    """grpcio-reflection's servicer, except that a request for one of the contract's files, by
    name or by a symbol it declares, is answered with that file's comments included."""

    def __init__(self, servicer: Any, files: descriptor_pb2.FileDescriptorSet) -> None:
        self._servicer = servicer
        documented: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for file in files.file:
            proto = _with_comments(file)
            if proto is None:
                _log.warning({"event": "reflection_without_comments", "file": file.name})
            else:
                documented[file.name] = proto
        self._symbols = {symbol: f.name for f in documented.values() for symbol in _symbols(f)}
        # A reply holds the file and everything it imports, as grpcio-reflection's do.
        self._replies = {name: _with_imports(name, documented) for name in documented}

    async def ServerReflectionInfo(  # noqa: N802 (gRPC method name)
        self, requests: AsyncIterator[reflection_pb2.ServerReflectionRequest], context: Context
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for request in requests:
            name = self._documented_file(request)
            if name is None:
                async for response in self._servicer.ServerReflectionInfo(_one(request), context):
                    yield response
                continue
            yield reflection_pb2.ServerReflectionResponse(
                original_request=request,
                file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                    file_descriptor_proto=self._replies[name]
                ),
            )

    def _documented_file(self, request: reflection_pb2.ServerReflectionRequest) -> str | None:
        kind = request.WhichOneof("message_request")
        if kind == "file_by_filename":
            name: str = request.file_by_filename
            return name if name in self._replies else None
        if kind == "file_containing_symbol":
            return self._symbols.get(request.file_containing_symbol)
        return None


async def _one(
    request: reflection_pb2.ServerReflectionRequest,
) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    yield request


def _with_comments(
    documented: descriptor_pb2.FileDescriptorProto,
) -> descriptor_pb2.FileDescriptorProto | None:
    """The runtime's descriptor of `documented`'s file with `documented`'s comments, or None when
    the two declare different things (a descriptor set out of step with the generated code, whose
    comments would land on the wrong declarations)."""
    try:
        file = descriptor_pool.Default().FindFileByName(documented.name)
    except KeyError:
        return None
    runtime = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(runtime)
    declared = descriptor_pb2.FileDescriptorProto()
    declared.CopyFrom(documented)
    declared.ClearField("source_code_info")
    _clear_json_names(declared.message_type)
    if declared != runtime:
        return None
    runtime.source_code_info.CopyFrom(documented.source_code_info)
    return runtime


def _clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


def _with_imports(name: str, documented: dict[str, descriptor_pb2.FileDescriptorProto]) -> list[bytes]:
    """`name` and its transitive imports, serialized: the contract's own files with their
    comments, any other (the well-known types) from the runtime's pool."""
    files: dict[str, bytes] = {}
    pending = [name]
    while pending:
        current = pending.pop()
        if current in files:
            continue
        proto = documented.get(current)
        if proto is None:
            proto = descriptor_pb2.FileDescriptorProto()
            descriptor_pool.Default().FindFileByName(current).CopyToProto(proto)
        files[current] = proto.SerializeToString()
        pending.extend(proto.dependency)
    return list(files.values())


def _symbols(file: descriptor_pb2.FileDescriptorProto) -> Iterator[str]:
    """Every fully qualified name `file` declares, as grpcurl may ask for it."""
    prefix = f"{file.package}." if file.package else ""
    for message in file.message_type:
        yield from _message_symbols(prefix, message)
    for enum in file.enum_type:
        yield from _enum_symbols(prefix, enum)
    for service in file.service:
        yield prefix + service.name
        for method in service.method:
            yield f"{prefix}{service.name}.{method.name}"


def _message_symbols(prefix: str, message: descriptor_pb2.DescriptorProto) -> Iterator[str]:
    name = prefix + message.name
    yield name
    for field in message.field:
        yield f"{name}.{field.name}"
    for oneof in message.oneof_decl:
        yield f"{name}.{oneof.name}"
    for nested in message.nested_type:
        yield from _message_symbols(f"{name}.", nested)
    for enum in message.enum_type:
        yield from _enum_symbols(f"{name}.", enum)


def _enum_symbols(prefix: str, enum: descriptor_pb2.EnumDescriptorProto) -> Iterator[str]:
    yield prefix + enum.name
    # Enum values are scoped beside their enum, not inside it (C++ scoping rules).
    for value in enum.value:
        yield prefix + value.name


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
    servicer = _DocumentedReflection(
        reflection.aio.ReflectionServicer(names),  # type: ignore[attr-defined]
        documented_files(),
    )
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
