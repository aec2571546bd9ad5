"""The README's console sessions, run as written against a gateway started the way `make run`
starts it, from the repository root.

Every `$ ...` command in a ```console block runs through bash, verbatim but for the port: the
gateway listens on a free port rather than 50051, which may be taken on a shared machine. What a
command prints must match what the README shows under it: the same lines, JSON with the same
fields and values (a `...` in the README stands for fields it leaves out; request ids, chat ids, days
and durations only need the right shape), or the same error code, message and details. A command
whose shown output starts with an error must fail; any other must exit 0.

A block that needs more than the embedded defaults says so in a marker before it, and gets it
from the test: `<!-- readme-test: keys openai anthropic -->` starts its gateway with those
providers' API keys set (any value: the block never reaches them), `<!-- readme-test: fresh NAME -->`
a gateway of its own on the embedded defaults (counts no other block adds to), and
`<!-- readme-test: upstream <provider> <answer> -->` points the provider at a stand-in on loopback
that gives that answer (`UPSTREAMS`), so what is checked is the gateway's side of it, and
`<!-- readme-test: config PATH -->` adds a config file of the checkout to the defaults.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_ADDRESS = "localhost:50051"
README_HTTP_ADDRESS = "localhost:8080"
MARKER = re.compile(r"<!-- readme-test: (.+) -->")
# Values that differ on every call: only their shape is checked.
# Instants (RFC 3339, UTC) depend on the day the test runs.
INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z")
VOLATILE = [
    re.compile(r"chat_[0-9a-f.]+"),
    re.compile(r"batch_[0-9a-f]{24}"),
    re.compile(r"[0-9]+(\.[0-9]+)?s"),
    INSTANT,
]
# The same in a table: days and durations of seconds only need their shape.
VOLATILE_IN_LINES = [re.compile(r"\b[0-9]{4}-[0-9]{2}-[0-9]{2}\b"), re.compile(r"\b[0-9]+\.[0-9]{3} s\b")]
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
# A JSON string, or an elision the README writes in its place of fields it leaves out.
STRING_OR_ELISION = re.compile(r'"(?:[^"\\]|\\.)*"|\.\.\.')
# A JSON string, or a comma an elision left dangling (before another comma or a closing bracket,
# or right after an opening one).
STRING_OR_DANGLING_COMMA = re.compile(r'("(?:[^"\\]|\\.)*")|,(\s*[,}\]])|([\[{])\s*,')


@dataclass(frozen=True)
class Command:
    line: int  # where it starts in the README
    text: str  # as bash reads it, continuation lines included
    shown: str  # what the README shows it printing
    setup: str  # what its gateway needs, from the block's marker; "" for the embedded defaults

    @property
    def fails(self) -> bool:
        first = self.shown.split("\n", 1)[0]
        return "error" in first.lower()


def readme_commands() -> list[Command]:
    lines = README.read_text().splitlines()
    commands: list[Command] = []
    for i, line in enumerate(lines):
        if line != "```console":
            continue
        marker = MARKER.fullmatch(lines[i - 1].strip())
        end = lines.index("```", i + 1)
        commands += block_commands(lines[i + 1 : end], i + 2, marker.group(1) if marker else "")
    return commands


def block_commands(body: list[str], first_line: int, setup: str) -> Iterator[Command]:
    i = 0
    while i < len(body):
        if not body[i].startswith("$ "):
            i += 1
            continue
        start, text = i, body[i].removeprefix("$ ")
        while not complete(text):
            i += 1
            text += "\n" + body[i]
        i += 1
        output_start = i
        while i < len(body) and not body[i].startswith("$ "):
            i += 1
        yield Command(first_line + start, text, "\n".join(body[output_start:i]).strip("\n"), setup)


def complete(text: str) -> bool:
    """Whether `text` is a whole command: no continuation backslash, no open quote."""
    if text.endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def command_id(command: Command) -> str:
    words = [w for w in shlex.split(command.text, comments=True) if "=" not in w]
    return f"line{command.line}-{Path(words[0]).name}-{words[-1].rpartition('/')[2]}"


COMMANDS = readme_commands()


def clean_env() -> dict[str, str]:
    """This environment without provider keys or gateway settings, so the gateway serves the
    embedded defaults (the mock provider) as `make run` does on a machine without keys."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.endswith("_API_KEY") and not name.startswith(("LLM_GATEWAY", "AZURE_OPENAI"))
    }
    return {**env, "HOME": str(ROOT)}


class Upstream(ThreadingHTTPServer):
    """A stand-in provider on loopback answering every POST with one JSON reply."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        reply = json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


# Stand-ins: (provider, answer) -> (HTTP status, JSON body, the path its base URL ends with).
UPSTREAMS: dict[tuple[str, str], tuple[int, dict[str, Any], str]] = {
    ("openai", "overloaded"): (
        503,
        {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}},
        "/v1",
    ),
    ("anthropic", "thinking"): (
        200,
        {
            "id": "msg_01ReadmeExample",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [
                {"type": "thinking", "thinking": "2, 3, 5, 7, ... 97: 25 of them.", "signature": "c2ln"},
                {"type": "text", "text": "There are 25 primes below 100."},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 18,
                "output_tokens": 412,
                "output_tokens_details": {"thinking_tokens": 396},
            },
        },
        "",
    ),
}


def setup_env(setup: str, stack: ExitStack) -> dict[str, str]:
    """The environment a marker asks for, starting its stand-in upstream (stopped by `stack`)."""
    kind, *words = setup.split()
    if kind == "keys":
        return {f"{name.upper()}_API_KEY": f"readme-test-key-{name}" for name in words}
    if kind == "fresh":  # a gateway of its own, whose counts no other block's calls reach
        return {}
    if kind == "config":  # a gateway on the embedded defaults plus a config file of the checkout
        (path,) = words
        return {"LLM_GATEWAY_CONFIG": str(ROOT / path)}
    assert kind == "upstream", f"unknown readme-test marker: {setup!r}"
    provider, answer = words
    status, body, path = UPSTREAMS[(provider, answer)]
    upstream = Upstream(status, body)
    stack.callback(upstream.server_close)
    stack.callback(upstream.shutdown)
    prefix = f"LLM_GATEWAY__PROVIDERS__{provider.upper()}"
    return {
        f"{provider.upper()}_API_KEY": f"readme-test-key-{provider}",
        f"{prefix}__BASE_URL": f"http://127.0.0.1:{upstream.server_address[1]}{path}",
        # The default retry policy: the example's three attempts, with its backoff kept short.
        f"{prefix}__RETRY__INITIAL_BACKOFF": "0.05",
    }


def serve(directory: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, str]:
    """`llm-gateway serve` as `make run` runs it (the venv's command, no config file) on free
    ports; the process, its gRPC port and its HTTP door's port."""
    port_file, log = directory / "port", directory / "gateway.log"
    command = [
        str(ROOT / ".venv" / "bin" / "llm-gateway"),
        "serve",
        "--port",
        "0",
        "--port-file",
        str(port_file),
    ]
    # Its usage ledger lives with the test, not in the checkout.
    ledger = {
        "LLM_GATEWAY__LEDGER__URL": f"sqlite:///{directory}/ledger.db",
        "LLM_GATEWAY__LEDGER__SPOOL_DIR": str(directory / "spool"),
        "LLM_GATEWAY__HTTP__PORT": "0",  # beside `make run`, and the other blocks' gateways
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**clean_env(), **ledger, **env}, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text().strip()):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no port after 20 s:\n{log.read_text()}"
        time.sleep(0.05)
    serving = [line for line in log.read_text().splitlines() if '"event":"serving"' in line]
    assert serving, log.read_text()
    return process, port_file.read_text().strip(), str(json.loads(serving[0])["http_port"])


@pytest.fixture(scope="module")
def readme_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], Callable[[str], str]]]:
    """The gateway for a block's setup, started once per setup: what puts its addresses where the
    README writes localhost:50051 and localhost:8080."""
    started: dict[str, Callable[[str], str]] = {}
    with ExitStack() as stack:

        def addressed(setup: str) -> Callable[[str], str]:
            if setup not in started:
                env = setup_env(setup, stack) if setup else {}
                process, port, http_port = serve(tmp_path_factory.mktemp("readme"), env)
                stack.callback(process.wait, 30)
                stack.callback(process.terminate)
                started[setup] = lambda text: text.replace(README_ADDRESS, f"localhost:{port}").replace(
                    README_HTTP_ADDRESS, f"localhost:{http_port}"
                )
            return started[setup]

        yield addressed


def test_the_readme_commands_are_found_and_use_the_built_grpcurl() -> None:
    assert len(COMMANDS) >= 13, [c.text for c in COMMANDS]
    for command in COMMANDS:
        program = next(w for w in shlex.split(command.text, comments=True) if "=" not in w)
        assert program != "grpcurl", (
            f"README line {command.line}: use .tools/bin/grpcurl, which make run builds"
        )


@pytest.mark.parametrize("command", COMMANDS, ids=command_id)
def test_a_readme_command_prints_what_the_readme_shows(
    readme_gateway: Callable[[str], Callable[[str], str]], command: Command
) -> None:
    done = subprocess.run(
        ["bash", "-c", readme_gateway(command.setup)(command.text)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    printed = done.stdout + done.stderr
    where = f"README line {command.line}:\n{command.text}\nprinted:\n{printed}"
    if command.fails:
        assert done.returncode != 0, where
    else:
        assert done.returncode == 0, where
    if command.shown.startswith("ERROR:"):
        assert_same_error(command.shown, printed, where)
    elif command.shown.startswith("{"):
        assert_same_documents(command.shown, printed, where)
    else:
        assert_same_lines(command.shown, printed, where)


def assert_same_lines(shown: str, printed: str, where: str) -> None:
    """The lines shown, in order; a `...` line stands for any lines the README leaves out."""
    expected = [shape_of(line.strip()) for line in shown.splitlines()]
    actual = [shape_of(line.strip()) for line in printed.splitlines()]
    if "..." not in expected:
        assert actual == expected, where
        return
    rest = iter(actual)
    for line in expected:
        if line != "...":
            assert line in rest, f"{where}\nmissing, or out of order: {line}"


def shape_of(line: str) -> str:
    """`line` with its days and durations replaced by their patterns."""
    for pattern in VOLATILE_IN_LINES:
        line = pattern.sub(pattern.pattern, line)
    return line


def assert_same_documents(shown: str, printed: str, where: str) -> None:
    expected, actual = json_documents(without_elisions(shown)), json_documents(printed)
    assert len(actual) == len(expected), where
    for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert_matches(want, got, f"[{i}]", where)


def assert_same_error(shown: str, printed: str, where: str) -> None:
    want_code, want_message, want_details = error_report(shown)
    got_code, got_message, got_details = error_report(printed)
    assert (got_code, INSTANT.sub("<instant>", got_message)) == (
        want_code,
        INSTANT.sub("<instant>", want_message),
    ), where
    assert len(got_details) == len(want_details), where
    for i, (want, got) in enumerate(zip(want_details, got_details, strict=True)):
        assert_matches(want, got, f"details[{i}]", where)


def error_report(text: str) -> tuple[str, str, list[Any]]:
    """grpcurl's error report (ERROR:, Code:, Message:, Details: with numbered JSON documents),
    as the README shows it (compacted, with elisions) or as grpcurl prints it."""
    head, _, details = text.partition("Details:")
    code = re.search(r"^\s*Code: (.*)$", head, re.MULTILINE)
    message = re.search(r"^\s*Message: (.*)$", head, re.MULTILINE)
    assert code is not None, text
    assert message is not None, text
    items = re.split(r"^\s*\d+\)", details, flags=re.MULTILINE)[1:]
    return code[1].strip(), message[1].strip(), [json.loads(without_elisions(i)) for i in items]


def without_elisions(text: str) -> str:
    """The README's JSON with its `...` elisions taken out, so it parses."""
    text = STRING_OR_ELISION.sub(lambda m: m[0] if m[0].startswith('"') else "", text)
    while True:
        tidied = STRING_OR_DANGLING_COMMA.sub(lambda m: m[1] or m[2] or m[3], text)
        if tidied == text:
            return text
        text = tidied


def json_documents(text: str) -> list[Any]:
    """The JSON documents in `text`, one after another (a stream prints one per event)."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while text[position:].strip():
        position += len(text[position:]) - len(text[position:].lstrip())
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


def assert_matches(shown: Any, printed: Any, path: str, where: str, key: str = "") -> None:
    """`printed` has every field `shown` has, with the same value; lists are shown whole."""
    context = f"{where}\nat {path}"
    if isinstance(shown, dict):
        assert isinstance(printed, dict), context
        for name, value in shown.items():
            assert name in printed, f"{context}: no field {name!r}"
            assert_matches(value, printed[name], f"{path}.{name}", where, name)
    elif isinstance(shown, list):
        assert isinstance(printed, list), context
        assert len(printed) == len(shown), context
        for i, (want, got) in enumerate(zip(shown, printed, strict=True)):
            assert_matches(want, got, f"{path}[{i}]", where)
    elif key == "request_id":
        assert isinstance(printed, str), context
        assert REQUEST_ID.fullmatch(printed), context
    elif isinstance(shown, str) and (shape := next((v for v in VOLATILE if v.fullmatch(shown)), None)):
        assert isinstance(printed, str), context
        assert shape.fullmatch(printed), f"{context}: {printed!r} is not like {shown!r}"
    else:
        assert printed == shown, context
