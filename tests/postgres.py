"""A throwaway PostgreSQL server for the tests: one cluster per test session, in a temporary
directory, on a free loopback port, stopped when the session ends.

`initdb` refuses to run as root, and the tests run as root on CI, so there the cluster is created
and run as the `postgres` system user that Debian's package creates, in a directory that user owns.
`scripts/install-postgres.sh` (a prerequisite of `make test-python`) installs the server where it
is missing. Every test gets a database of its own, so tests never see each other's rows.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_port

# Durability of the server's own files is not what the tests are about: without fsync a test
# database is created in a few milliseconds instead of a few hundred.
_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _binaries() -> Path | None:
    """The directory of the newest installed server's programs (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


class PostgresCluster:
    """A cluster created by `initdb` and run with `pg_ctl`, as `postgres` when we are root."""

    def __init__(self, settings: tuple[str, ...] = _SETTINGS) -> None:
        bin_dir = _binaries()
        if bin_dir is None:
            pytest.fail(
                "PostgreSQL's server programs are not installed: run scripts/install-postgres.sh "
                "(make test-python does)"
            )
        self._bin = bin_dir
        self._as: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="llm-gateway-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root needs the 'postgres' system user to run initdb")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        self.port = free_port()
        self._names = itertools.count(1)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n")
            conf.write(f"unix_socket_directories = '{self.root}'\n")
            conf.writelines(f"{setting}\n" for setting in settings)
        self.start()

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self._bin / program), *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self) -> None:
        """Stops the server at once (connections are cut), as an outage would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self._psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def _psql(self, sql: str) -> None:
        subprocess.run(
            [str(self._bin / "psql"), "-q", "-X", "-v", "ON_ERROR_STOP=1", self.admin_url, "-c", sql],
            check=True,
            capture_output=True,
        )

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@functools.cache
def cluster() -> PostgresCluster:
    """The session's one cluster, created on first use and removed when the interpreter exits."""
    created = PostgresCluster()
    atexit.register(created.destroy)
    return created
