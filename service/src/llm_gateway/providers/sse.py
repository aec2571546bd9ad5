"""Server-sent events from a byte stream, parsed as the WHATWG HTML standard specifies (§9.2.6).

Fed raw chunks as they arrive from the network, so an event is handed on the moment its blank line
is read, whatever the chunk boundaries: lines may end in CRLF, LF or CR (a CR at the end of one
chunk and the LF at the start of the next are one line ending); a line without a colon is a field
with an empty value; comments (`:`) are skipped; `data` lines of one event are joined with a line
feed; an event without data is not dispatched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    __slots__ = ("_buffer", "_data", "_event", "_id", "_retry", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id = ""  # the last event id persists across events, as the standard says
        self._retry: int | None = None
        self._skip_lf = False  # the last chunk ended in CR: a LF starting the next one is its pair
        self._started = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by this chunk, in order."""
        if not chunk:
            return []
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = chunk.endswith(b"\r")
        lines = _LINE_END.split(self._buffer + chunk)
        self._buffer = lines.pop()  # not ended yet
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[ServerSentEvent]:
        events = []
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if not self._started:  # a byte order mark may open the stream
                self._started = True
                line = line.removeprefix("\ufeff")
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent("\n".join(self._data), self._event or "message", self._id, self._retry)
        self._data, self._event = [], ""
        return event
