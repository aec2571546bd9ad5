"""Domain types: plain Python, independent of protobuf and of every provider."""

from llm_gateway.domain.errors import Code, FieldViolation, GatewayError
from llm_gateway.domain.messages import (
    Caller,
    ChatRequest,
    GenerationConfig,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    ResponseFormatType,
    Role,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from llm_gateway.domain.results import (
    Completion,
    FinishReason,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from llm_gateway.domain.validation import validate_chat_request

__all__ = [
    "Caller",
    "ChatRequest",
    "Code",
    "Completion",
    "FieldViolation",
    "FinishReason",
    "GatewayError",
    "GenerationConfig",
    "ImagePart",
    "Message",
    "Part",
    "ResponseFormat",
    "ResponseFormatType",
    "Role",
    "StreamDone",
    "StreamEvent",
    "TextDelta",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolChoiceMode",
    "Usage",
    "validate_chat_request",
]
