"""The `[ledger]` table, the `ledger` commands, and the ledger started and closed as the server
does it: clear errors, and a URL's password never shown."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from llm_gateway import cli
from llm_gateway.config import ConfigError, load_config
from llm_gateway.gateway.record import Principal
from llm_gateway.ledger import Ledger, RecordFilter, redacted
from tests.ledgers import T0, backend_url, record
from tests.postgres import cluster

__all__ = ["backend_url"]  # a fixture

SECRET = "s3cret-pw-do-not-show"


def config_file(tmp_path: Path, ledger: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[ledger]\n{ledger}\n")
    return path


def test_the_ledger_is_on_by_default_in_a_sqlite_file_under_var() -> None:
    ledger = load_config(None, {}).ledger
    assert ledger.enabled
    assert ledger.url.get_secret_value() == "sqlite:///var/ledger.db"
    assert (ledger.flush_interval, ledger.batch_size, ledger.queue_size) == (0.1, 100, 10_000)
    assert ledger.spool_dir == Path("var/ledger-spool")
    assert ledger.retention_days == 400


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            f'url = "mysql://root:{SECRET}@db/ledger"',
            "ledger.url: Value error, must start with sqlite:/// or postgresql://",
        ),
        ('url = "sqlite:///"', "ledger.url: Value error, a sqlite URL names a file"),
        (f'url = "postgresql://u:{SECRET}@/db"', "ledger.url: Value error, a postgresql URL names a host"),
        ("flush_interval = 0", "ledger.flush_interval: Input should be greater than 0"),
        ("batch_size = 500\nqueue_size = 100", "batch_size must not exceed queue_size"),
        ("retention_days = -1", "ledger.retention_days: Input should be greater than or equal to 0"),
        ("colour = 1", "ledger.colour: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_named_and_the_url_never_repeated(
    tmp_path: Path, setting: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_file(tmp_path, setting), {})
    assert message in str(error.value)
    assert SECRET not in str(error.value)


def test_a_url_is_shown_without_its_password() -> None:
    assert redacted(f"postgresql://gw:{SECRET}@db.internal:5432/ledger?sslpassword={SECRET}") == (
        "postgresql://gw:***@db.internal:5432/ledger"
    )
    assert redacted("postgres://db.internal/ledger") == "postgres://db.internal/ledger"
    assert redacted("postgresql://gw@[::1]:5433/ledger") == "postgresql://gw@[::1]:5433/ledger"
    assert redacted("sqlite:///var/ledger.db") == "sqlite:///var/ledger.db"
    config = load_config(None, {"LLM_GATEWAY__LEDGER__URL": f"postgresql://gw:{SECRET}@db/ledger"})
    assert SECRET not in repr(config)
    assert SECRET not in str(config.ledger)


def test_check_config_shows_the_ledger_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            ["check-config", "--config", str(config_file(tmp_path, f'url = "postgresql://gw:{SECRET}@db/x"'))]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ledger: postgresql://gw:***@db/x" in out
    assert SECRET not in out


def test_ledger_migrate_and_prune_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite = config_file(tmp_path, f'url = "sqlite:///{tmp_path}/ledger.db"\nspool_dir = "{tmp_path}/spool"')
    assert cli.main(["ledger", "migrate", "--config", str(sqlite)]) == 0
    assert cli.main(["ledger", "migrate", "--config", str(sqlite)]) == 0
    out = capsys.readouterr().out
    assert out.count(f"ledger sqlite:///{tmp_path}/ledger.db: schema version 3") == 2
    assert cli.main(["ledger", "prune", "--config", str(sqlite)]) == 0
    assert "removed 0 call(s)" in capsys.readouterr().out

    database = cluster().new_database().replace("postgres@", f"postgres:{SECRET}@")  # trust: any password
    postgres = config_file(tmp_path, f'url = "{database}"')
    assert cli.main(["ledger", "migrate", "--config", str(postgres)]) == 0
    out = capsys.readouterr().out
    assert "schema version 3" in out
    assert SECRET not in out


def test_an_unreachable_database_fails_the_command_without_showing_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    unreachable = config_file(
        tmp_path, f'url = "postgresql://gw:{SECRET}@127.0.0.1:{port}/x"\nwrite_timeout = 2'
    )
    assert cli.main(["ledger", "migrate", "--config", str(unreachable)]) == 1
    captured = capsys.readouterr()
    assert f"ledger postgresql://gw:***@127.0.0.1:{port}/x:" in captured.err
    assert SECRET not in captured.out + captured.err


async def test_a_ledger_started_and_closed_like_the_server_does_keeps_every_call(
    tmp_path: Path, log_lines: list[str]
) -> None:
    url = cluster().new_database().replace("postgres@", f"postgres:{SECRET}@")
    config = load_config(config_file(tmp_path, f'url = "{url}"\nspool_dir = "{tmp_path}/spool"'), {})
    ledger = Ledger.from_config(config.ledger)
    assert ledger is not None
    await ledger.start()
    calls = [record(at=T0 + i, key="team-a") for i in range(250)]
    for call in calls:
        ledger.call_ended(call)
    await ledger.close()
    assert ledger.stats.written == 250

    reopened = Ledger(config.ledger)
    page = await reopened.queries.list_records(
        Principal("team-a", admin=False), RecordFilter(), page_size=1000
    )
    await reopened.store.close()
    assert sorted(c.id for c in page.records) == sorted(c.id for c in calls)
    assert any('"event":"ledger_started"' in line for line in log_lines)
    assert all(SECRET not in line for line in log_lines)
    assert Ledger.from_config(load_config(config_file(tmp_path, "enabled = false"), {}).ledger) is None


async def test_closing_twice_is_harmless(backend_url: str, tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, f'url = "{backend_url}"\nspool_dir = "{tmp_path}/spool"'), {})
    ledger = Ledger(config.ledger)
    await ledger.start()
    ledger.call_ended(record())
    await ledger.close()
    await ledger.close()
    assert ledger.stats.written == 1
