"""The README's console sessions, run as written against a gateway started the way `make run`
starts it, from the repository root.

Every `$ ...` command in a ```console block runs through bash, verbatim but for the port: the
gateway listens on a free port rather than 50051, which may be taken on a shared machine. What a
command prints must match what the README shows under it: the same lines, JSON with the same
fields and values (a `...` in the README stands for fields it leaves out; request ids, chat ids
and durations only need the right shape), or the same error code, message and details. A command
whose shown output starts with an error must fail; any other must exit 0. A block that needs a
provider key or a real upstream is preceded by `<!-- readme-test: skip, <why> -->`, and its
commands are reported as skipped with that reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_ADDRESS = "localhost:50051"
SKIP = re.compile(r"<!-- readme-test: skip, (.+) -->")
# Values that differ on every call: only their shape is checked.
VOLATILE = [re.compile(r"chat_[0-9a-f.]+"), re.compile(r"[0-9]+(\.[0-9]+)?s")]
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
    skip: str  # why it cannot run here, from the block's marker; "" to run it

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
        marker = SKIP.fullmatch(lines[i - 1].strip())
        end = lines.index("```", i + 1)
        commands += block_commands(lines[i + 1 : end], i + 2, marker.group(1) if marker else "")
    return commands


def block_commands(body: list[str], first_line: int, skip: str) -> Iterator[Command]:
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
        yield Command(first_line + start, text, "\n".join(body[output_start:i]).strip("\n"), skip)


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


@pytest.fixture(scope="module")
def readme_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`llm-gateway serve` as `make run` runs it (the venv's command, no config file), on a free
    port; its address as the README would write it."""
    directory = tmp_path_factory.mktemp("readme")
    port_file, log = directory / "port", directory / "gateway.log"
    command = [
        str(ROOT / ".venv" / "bin" / "llm-gateway"),
        "serve",
        "--port",
        "0",
        "--port-file",
        str(port_file),
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no port after 20 s:\n{log.read_text()}"
            time.sleep(0.05)
        yield f"localhost:{port_file.read_text().strip()}"
    finally:
        process.terminate()
        process.wait(30)


def test_the_readme_commands_are_found_and_use_the_built_grpcurl() -> None:
    runnable = [c for c in COMMANDS if not c.skip]
    assert len(runnable) >= 9, [c.text for c in runnable]
    for command in COMMANDS:
        program = next(w for w in shlex.split(command.text, comments=True) if "=" not in w)
        assert program != "grpcurl", (
            f"README line {command.line}: use .tools/bin/grpcurl, which make run builds"
        )
    for command in COMMANDS:
        if command.skip:
            assert "grpcurl" in command.text  # only calls that need a provider are skipped


@pytest.mark.parametrize("command", COMMANDS, ids=command_id)
def test_a_readme_command_prints_what_the_readme_shows(readme_gateway: str, command: Command) -> None:
    if command.skip:
        pytest.skip(f"README line {command.line}: {command.skip}")
    done = subprocess.run(
        ["bash", "-c", command.text.replace(README_ADDRESS, readme_gateway)],
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
    expected = [line.strip() for line in shown.splitlines()]
    actual = [line.strip() for line in printed.splitlines()]
    if "..." not in expected:
        assert actual == expected, where
        return
    rest = iter(actual)
    for line in expected:
        if line != "...":
            assert line in rest, f"{where}\nmissing, or out of order: {line}"


def assert_same_documents(shown: str, printed: str, where: str) -> None:
    expected, actual = json_documents(without_elisions(shown)), json_documents(printed)
    assert len(actual) == len(expected), where
    for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert_matches(want, got, f"[{i}]", where)


def assert_same_error(shown: str, printed: str, where: str) -> None:
    want_code, want_message, want_details = error_report(shown)
    got_code, got_message, got_details = error_report(printed)
    assert (got_code, got_message) == (want_code, want_message), where
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
