"""Fixtures: the gateway in-process on a free loopback port, reached through the generated asyncio
stub, and fake upstream providers that are real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import resource
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from llm_gateway.config import load_config
from llm_gateway.logs import JsonFormatter
from llm_gateway.server import GatewayServer, create_server
from llmgateway.v1 import chat_pb2, content_pb2, gateway_service_pb2_grpc
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.cohere import FakeCohere
from tests.fakes.gemini import FakeGemini
from tests.fakes.llamacpp import FakeLlamaCppPython, FakeLlamaServer
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI

OPENAI_TEST_KEY = "sk-test-0123456789abcdefSECRET"


@dataclass
class RunningGateway:
    server: GatewayServer
    channel: grpc.aio.Channel
    stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub
    address: str

    @property
    def http_url(self) -> str:
        """The HTTP door's base URL ("http://127.0.0.1:PORT")."""
        assert self.server.http is not None
        return f"http://127.0.0.1:{self.server.http.port}"


def pytest_configure(config: pytest.Config) -> None:
    """The in-process gateways get the open-file limit `llm-gateway serve` gives itself (the soft
    limit raised to the hard one): a process near a soft limit of 1,024 cannot accept a connection,
    and its caller waits out its whole timeout."""
    del config
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    """A loopback port nothing listens on now (for a server to bind, or a connection to be refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_ledger_in(directory: Path, toml: str) -> str:
    """`toml` with its usage ledger in `directory` (unless it configures one): a test's calls are
    kept with the test, not in the checkout; and its HTTP door on a free port."""
    if "[http]" not in toml:  # a free port: tests run side by side, and beside `make run`
        toml = f"{toml}\n[http]\nport = 0\n"
    if "[ledger]" not in toml:
        return f'{toml}\n[ledger]\nurl = "sqlite:///{directory}/ledger.db"\nspool_dir = "{directory}/spool"\n'
    if "spool_dir" not in toml:  # records spooled in an outage stay with the test that spooled them
        toml = toml.replace("[ledger]\n", f'[ledger]\nspool_dir = "{directory}/spool"\n', 1)
    return toml


@asynccontextmanager
async def running_gateway(
    toml: str = "", env: Mapping[str, str] | None = None
) -> AsyncIterator[RunningGateway]:
    """A started gateway configured by the embedded defaults plus `toml`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.toml"
        path.write_text(with_ledger_in(Path(tmp), toml))
        config = load_config(path, env or {})
        server = await create_server(config, host="127.0.0.1", port=0)
        await server.start()
        address = f"127.0.0.1:{server.port}"
        channel = grpc.aio.insecure_channel(address)
        try:
            yield RunningGateway(
                server, channel, gateway_service_pb2_grpc.GatewayServiceStub(channel), address
            )
        finally:
            await channel.close(None)
            await server.stop(0)


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    address: str
    log: Path

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    async def access_lines(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        """The access lines once there are `count` of them (or `within` seconds have passed): a
        line is written after its reply went out, so the caller can be a moment ahead of it."""
        deadline = time.monotonic() + within
        while True:
            lines = [line for line in self.log_lines() if line.get("event") == "access"]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            await asyncio.sleep(0.05)


@asynccontextmanager
async def gateway_process(directory: Path, toml: str, *args: str) -> AsyncIterator[GatewayProcess]:
    """`llm-gateway serve` as a child process on a free port, logging to a file in `directory`."""
    config, port_file, log = directory / "gateway.toml", directory / "port", directory / "gateway.log"
    config.write_text(with_ledger_in(directory, toml))
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llm_gateway",
            "serve",
            "--config",
            str(config),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *args,
            stdout=out,
            stderr=out,
        )
    try:
        for _ in range(400):
            if port_file.exists() and port_file.read_text().strip():
                break
            assert process.returncode is None, log.read_text()
            await asyncio.sleep(0.05)
        yield GatewayProcess(process, f"127.0.0.1:{port_file.read_text().strip()}", log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# Provider tests script one upstream reply per call and check what the caller gets for it, so
# their providers make no retries; the retry policy has its own tests (test_faults.py).
NO_RETRIES = "retry = { max_retries = 0 }"


def openai_toml(base_url: str, extra: str = "", retry: str = NO_RETRIES) -> str:
    return f"""
[providers.openai]
base_url = "{base_url}"
api_key = "{OPENAI_TEST_KEY}"
timeout = {{ connect = 2.0, read = 5.0 }}
{retry}
{extra}
"""


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# No test here needs this long; one that does is stuck, and its stacks say where.
STUCK_AFTER = float(os.environ.get("STUCK_AFTER", "180"))


@pytest.fixture(autouse=True)
async def stuck_test_watchdog(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Past STUCK_AFTER seconds, prints every asyncio task's stack and every thread's, then
    cancels the test: one test waiting forever fails alone and shows what it waited on, instead of
    waiting out a client's ten-minute timeout."""
    handle = asyncio.get_running_loop().call_later(STUCK_AFTER, _stuck, request.node)
    yield
    handle.cancel()


def _stuck(node: pytest.Item) -> None:
    # To the process's own stderr: pytest captures the test's, and shows it only for a failure,
    # which a test stuck in a fixture's teardown never becomes.
    out = sys.__stderr__ or sys.stderr
    print(f"\n{node.nodeid} has run for {STUCK_AFTER:.0f} s; its tasks:", file=out)
    name = getattr(node, "originalname", node.name)
    tasks = asyncio.all_tasks()
    for task in tasks:
        try:
            task.print_stack(limit=30, file=out)
        except Exception as error:  # a frame without a line number (3.11) must not stop the dump
            frames = [f"{f.f_code.co_filename}:{f.f_code.co_name}" for f in task.get_stack(limit=30)]
            print(f"{task!r}: {frames} ({error!r})", file=out)
    faulthandler.dump_traceback(file=out, all_threads=True)
    for task in tasks:
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and code.co_name == name:
            task.cancel(f"stuck for {STUCK_AFTER:.0f} s")


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log line the process writes during the test, as the JSON the gateway logs."""
    handler = _Capture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    async with running_gateway() as gw:
        yield gw


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def fake_gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as fake:
        yield fake


@pytest.fixture
async def fake_cohere() -> AsyncIterator[FakeCohere]:
    async with FakeCohere() as fake:
        yield fake


@pytest.fixture
async def fake_ollama() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as fake:
        yield fake


@pytest.fixture
async def llama_server() -> AsyncIterator[FakeLlamaServer]:
    async with FakeLlamaServer() as fake:
        yield fake


@pytest.fixture
async def llama_cpp_python() -> AsyncIterator[FakeLlamaCppPython]:
    async with FakeLlamaCppPython() as fake:
        yield fake


@pytest.fixture
async def openai_gateway(fake_openai: FakeOpenAI) -> AsyncIterator[RunningGateway]:
    async with running_gateway(openai_toml(fake_openai.base_url)) as gw:
        yield gw


def text_message(role: content_pb2.Role.ValueType, text: str) -> content_pb2.Message:
    return content_pb2.Message(role=role, content=[content_pb2.Part(text=text)])


def user(text: str) -> content_pb2.Message:
    return text_message(content_pb2.ROLE_USER, text)


def chat(model: str, text: str = "Hello there, gateway", **fields: object) -> chat_pb2.ChatRequest:
    return chat_pb2.ChatRequest(model=model, messages=[user(text)], **fields)  # type: ignore[arg-type]


def reply_text(message: content_pb2.Message) -> str:
    return "".join(part.text for part in message.content)


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo
    bad_request: error_details_pb2.BadRequest | None
    retry: error_details_pb2.RetryInfo | None


def error_details(err: grpc.aio.AioRpcError) -> ErrorDetails:
    """The rich status of a failed call. Every gateway error must carry an ErrorInfo."""
    raw = metadata_value(err.trailing_metadata(), "grpc-status-details-bin")
    assert isinstance(raw, bytes), f"no status details on {err.code()}: {err.details()}"
    status = status_pb2.Status.FromString(raw)
    info = bad = retry = None
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
        elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_detail.Unpack(bad)
        elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_detail.Unpack(retry)
    assert info is not None, "every gateway error carries a google.rpc.ErrorInfo"
    assert info.domain == "llmgateway.v1"
    return ErrorDetails(err.code(), err.details() or "", info, bad, retry)


def metadata_value(metadata: object, key: str) -> str | bytes | None:
    """A value from call metadata (grpc.aio.Metadata, or pairs), whatever the stubs say its type is."""
    for item_key, value in cast(Iterable[tuple[str, str | bytes]], metadata or ()):
        if item_key == key:
            return value
    return None


async def read_event(call: object) -> chat_pb2.ChatStreamResponse | None:
    """The next event of a ChatStream call read with read(), or None at the end of the stream."""
    event = await cast(grpc.aio.UnaryStreamCall[Any, Any], call).read()
    return None if event is grpc.aio.EOF else cast(chat_pb2.ChatStreamResponse, event)  # type: ignore[attr-defined]


async def stream_past_first_delta(
    gw: RunningGateway, request: chat_pb2.ChatRequest
) -> grpc.aio.UnaryStreamCall[Any, Any]:
    """A ChatStream call whose start event and first text delta have been read."""
    call = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))
    first, second = await read_event(call), await read_event(call)
    assert first is not None
    assert first.HasField("start")
    assert second is not None
    assert second.HasField("text_delta")
    return call


def violated_fields(details: ErrorDetails) -> list[str]:
    assert details.bad_request is not None, "INVALID_ARGUMENT carries a BadRequest"
    return [v.field for v in details.bad_request.field_violations]
