"""The SSE decoder against the WHATWG parsing rules, fed in every possible chunking."""

from __future__ import annotations

import pytest

from llm_gateway.providers.sse import ServerSentEvent, SSEDecoder

# A stream exercising the rules: BOM, comments, CRLF/CR/LF endings, a field without a colon, a
# value without the optional space, multi-line data, an event type, ids, retry, and an event
# with no data (not dispatched).
STREAM = (
    b"\xef\xbb\xbfdata: first\r\n"
    b": a comment\r\n\r\n"
    b'event: delta\rdata:{"a": 1}\rid: 7\r\r'
    b"data: line one\ndata: line two\nretry: 1500\n\n"
    b"event: ignored\nid: 8\n\n"
    b"data\n\n"
    b"data: [DONE]\n\n"
    b"data: never finished"
)
EXPECTED = [
    ServerSentEvent("first"),
    ServerSentEvent('{"a": 1}', event="delta", id="7"),
    ServerSentEvent("line one\nline two", id="7", retry=1500),
    ServerSentEvent("", id="8", retry=1500),
    ServerSentEvent("[DONE]", id="8", retry=1500),
]


def decode(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_whole_stream() -> None:
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(chunks) == EXPECTED


def test_every_split_point_of_a_crlf_stream() -> None:
    stream = b"data: a\r\n\r\ndata: b\r\n\r\n"
    for cut in range(len(stream) + 1):
        assert decode([stream[:cut], stream[cut:]]) == [ServerSentEvent("a"), ServerSentEvent("b")], cut


def test_an_event_is_handed_on_as_soon_as_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("one")]
    assert decoder.feed(b"data: two\n\ndata: thr") == [ServerSentEvent("two")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode([b"data: \xff\n\n"]) == [ServerSentEvent("\ufffd")]


def test_id_with_nul_and_non_numeric_retry_are_ignored() -> None:
    assert decode([b"id: a\x00b\nretry: 1s\ndata: x\n\n"]) == [ServerSentEvent("x")]
