"""The Dockerfile, checked without a Docker engine: what it copies exists and reaches the build
context, the final stage runs unprivileged in a directory it owns (where the default ledger
lands), and the image's own command, run here the way the image runs it, serves, passes the
image's health check, keeps its ledger in the working directory and stops on the stop signal."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from dockerfile_parse import DockerfileParser

from llm_gateway.config.schema import HttpConfig, LedgerConfig, ServerConfig
from llmgateway.v1 import gateway_service_pb2_grpc
from tests.conftest import chat, free_port

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    parsed = DockerfileParser(str(ROOT / "Dockerfile"))
    return [(i["instruction"], i["value"]) for i in parsed.structure if i["instruction"] != "COMMENT"]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM")
    return steps[last_from:]


def one(stage: list[tuple[str, str]], instruction: str) -> str:
    values = [value for name, value in stage if name == instruction]
    assert len(values) == 1, f"the final stage has {len(values)} {instruction} instructions"
    return values[0]


def exec_form(value: str) -> list[str]:
    """An instruction's JSON (exec) form, as Docker runs it: no shell."""
    argv = json.loads(value)
    assert isinstance(argv, list)
    return [str(arg) for arg in argv]


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context."""
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if pattern and not pattern.startswith("#"):
            parts = Path(path).parts
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
                return True
    return False


def test_what_the_image_copies_exists_and_is_in_the_build_context() -> None:
    copies = [shlex.split(value) for name, value in instructions() if name == "COPY"]
    sources = [src for *srcs, _ in copies if not srcs[0].startswith("--from") for src in srcs]
    assert "requirements.lock" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"{source} is excluded by .dockerignore"
    for image in [value.split()[0] for name, value in instructions() if name == "FROM"]:
        assert ":" in image, f"{image} is not pinned to a version"
        assert not image.endswith(":latest"), f"{image} is not pinned to a version"


def test_the_final_stage_runs_unprivileged_in_a_directory_it_owns() -> None:
    stage = final_stage()
    user, workdir = one(stage, "USER"), one(stage, "WORKDIR")
    assert user.isdigit()
    assert int(user) != 0
    setup = " ".join(value for name, value in stage if name == "RUN")
    assert f"mkdir {workdir}" in setup
    assert f"chown {user}:{user} {workdir}" in setup
    assert exec_form(one(stage, "VOLUME")) == [workdir]
    # The default ledger and its spool are relative, so they land in the working directory.
    defaults = LedgerConfig()
    assert defaults.url.get_secret_value() == "sqlite:///var/ledger.db"
    assert not defaults.spool_dir.is_absolute()
    # The gRPC port, and the HTTP door's.
    assert one(stage, "EXPOSE").split() == [str(ServerConfig().port), str(HttpConfig().port)]


def image_env() -> dict[str, str]:
    """The environment the image's ENV instructions give, with this checkout's virtualenv standing
    in for the image's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_GATEWAY")}
    for name, value in final_stage():
        if name == "ENV":
            for assignment in shlex.split(value):
                key, _, setting = assignment.partition("=")
                setting = setting.replace("$PATH", os.environ.get("PATH", ""))
                env[key] = setting.replace("/opt/gateway/bin", str(Path(sys.executable).parent))
    return env


@contextlib.contextmanager
def image_command(workdir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """ENTRYPOINT + CMD with the image's environment, in `workdir`, listening on `port`."""
    stage = final_stage()
    argv = exec_form(one(stage, "ENTRYPOINT")) + exec_form(one(stage, "CMD"))
    env = {**image_env(), "LLM_GATEWAY__SERVER__PORT": str(port)}
    process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def health_check(port: int) -> list[str]:
    value = one(final_stage(), "HEALTHCHECK")
    argv = exec_form(value.split(" CMD ", 1)[1].strip())
    return [arg.replace(":50051", f":{port}") for arg in argv]


def stop_signal() -> signal.Signals:
    return signal.Signals[one(final_stage(), "STOPSIGNAL")]


def test_the_image_command_serves_keeps_its_ledger_in_the_workdir_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    with image_command(tmp_path, port) as gateway:
        check = health_check(port)
        for _ in range(200):
            assert gateway.poll() is None, gateway.stdout.read().decode() if gateway.stdout else ""
            if subprocess.run(check, capture_output=True, check=False, env=image_env()).returncode == 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the health check never passed")

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = gateway_service_pb2_grpc.GatewayServiceStub(channel).Chat(chat("mock:echo"), timeout=10)
        ledger = tmp_path / "var" / "ledger.db"
        rows = 0
        for _ in range(100):
            if ledger.exists():
                # Not migrated yet: OperationalError (no such table).
                with (
                    contextlib.closing(sqlite3.connect(ledger)) as db,
                    contextlib.suppress(sqlite3.OperationalError),
                ):
                    rows = db.execute(
                        "SELECT count(*) FROM ledger_calls WHERE id = ?", (reply.id,)
                    ).fetchone()[0]
            if rows:
                break
            time.sleep(0.05)
        assert rows == 1, "the call did not reach the ledger in the working directory"

        gateway.send_signal(stop_signal())
        assert gateway.wait(timeout=20) == 0
    assert subprocess.run(check, capture_output=True, check=False, env=image_env()).returncode != 0
