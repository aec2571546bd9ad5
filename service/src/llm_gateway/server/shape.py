"""A cheap look at a large request's shape before it is decoded.

Decoding a request body costs time in proportion to its elements, on the event loop, with the GIL
held (protobuf's parser never lets it go): a 9 MB body of a million one-word messages takes about
0.3 s and 350 MB to decode, however soon validation then refuses it. So a large body is first
parsed as a skeleton that keeps each message as raw bytes (a few times cheaper, and no message
objects), and a request with more messages than the gateway takes is refused from that.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from llm_gateway.domain.errors import GatewayError, invalid_request
from llm_gateway.domain.limits import MESSAGES

# Bodies smaller than this are decoded directly: their worst case is a few milliseconds.
CHECK_ABOVE_BYTES = 1 << 20

_FIELD = descriptor_pb2.FieldDescriptorProto


def _skeletons() -> tuple[type[Message], type[Message]]:
    """`ChatRequest` with `messages` (field 2) as raw bytes, and a request embedding one as field 1
    (`ChatStreamRequest.request`, `EstimateCostRequest.request`). Other fields are skipped."""
    file = descriptor_pb2.FileDescriptorProto(name="llm_gateway/request_shape.proto", package="shape")
    chat = file.message_type.add(name="Chat")
    chat.field.add(name="messages", number=2, type=_FIELD.TYPE_BYTES, label=_FIELD.LABEL_REPEATED)
    nested = file.message_type.add(name="Nested")
    nested.field.add(
        name="request",
        number=1,
        type=_FIELD.TYPE_MESSAGE,
        type_name=".shape.Chat",
        label=_FIELD.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("shape.Chat")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("shape.Nested")),
    )


_CHAT, _NESTED = _skeletons()
# Methods whose request is a ChatRequest, or embeds one as field 1.
_DIRECT = frozenset({"/llmgateway.v1.GatewayService/Chat"})
_EMBEDDED = frozenset(
    {"/llmgateway.v1.GatewayService/ChatStream", "/llmgateway.v1.GatewayService/EstimateCost"}
)


def shape_problem(method: str, data: bytes) -> GatewayError | None:
    """INVALID_ARGUMENT for a large body of a chat method with too many messages; None when the body
    should be decoded (small, another method, within limits, or not a message at all: the decoder
    reports that)."""
    if len(data) <= CHECK_ABOVE_BYTES or (method not in _DIRECT and method not in _EMBEDDED):
        return None
    try:
        if method in _DIRECT:
            count, field = len(_CHAT.FromString(data).messages), "messages"  # type: ignore[attr-defined]
        else:
            count, field = len(_NESTED.FromString(data).request.messages), "request.messages"  # type: ignore[attr-defined]
    except DecodeError:
        return None
    # The domain's limit, so the refusal reads as the decoder's would.
    problem = MESSAGES.exceeded(field, count)
    return None if problem is None else invalid_request([problem])
