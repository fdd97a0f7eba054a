"""The `bfm` command line: help, version, exit codes, error sentences, durations."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import sysconfig
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from importlib import import_module, metadata
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from failover.cli.durations import (
    duration_option,
    format_duration_s,
    parse_duration_s,
    parse_point_in_time,
    point_in_time_option,
)
from failover.cli.errors import CheckFailed, CliError, Unreachable, UsageError
from failover.cli.main import COMMAND_MODULES, app, build_app, run
from failover.ports import Conflict, OutcomeUnknown, StoreUnavailable

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


FakeModules = Callable[..., types.ModuleType]


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModules]:
    def make(name: str, register: Callable[[typer.Typer], None] | None) -> types.ModuleType:
        module = types.ModuleType(name)
        if register is not None:
            module.register = register  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, module)
        return module

    yield make


def _subprocess(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    env.pop("BFM_DEBUG", None)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=env, cwd=REPO
    )


# --- help and version ---------------------------------------------------------------


def test_help_lists_the_commands_and_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "version" in result.output
    assert "Exit codes" in result.output


def test_installed_console_script_runs() -> None:
    script = Path(sysconfig.get_path("scripts")) / "bfm"
    assert script.exists(), f"{script} missing: install the project with pip install -e ."
    result = _subprocess(str(script), "--help")
    assert result.returncode == 0, result.stderr
    assert "version" in result.stdout
    assert result.stderr == ""


def test_python_dash_m_failover_is_bfm() -> None:
    result = _subprocess(sys.executable, "-m", "failover", "version", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == metadata.version("bfm")


def test_version_json_is_one_valid_object() -> None:
    result = runner.invoke(app, ["version", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts == {
        "package": "bfm",
        "version": metadata.version("bfm"),
        "python": platform.python_version(),
    }


def test_version_text_names_both_versions() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert metadata.version("bfm") in result.stdout
    assert platform.python_version() in result.stdout


def test_every_command_module_registers() -> None:
    for module_name in COMMAND_MODULES:
        assert callable(import_module(module_name).register), module_name


def test_a_command_module_without_register_is_refused(fake_module: FakeModules) -> None:
    fake_module("bfm_test_no_register", register=None)
    with pytest.raises(TypeError, match="bfm_test_no_register has no register"):
        build_app(("bfm_test_no_register",))


# --- usage errors exit 2 with one line ------------------------------------------------


def _assert_one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("bfm: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["frob"], "bfm: no such command 'frob'; see 'bfm --help'."),
        (["version", "--jsn"], "bfm: no such option: --jsn"),
        (["version", "extra"], "bfm: got unexpected extra argument"),
    ],
)
def test_usage_errors_exit_2_with_one_sentence(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 2
    line = _assert_one_error_line(capsys.readouterr().err)
    assert line.startswith(expected)


def test_bare_bfm_shows_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == 2
    captured = capsys.readouterr()
    assert "version" in captured.out
    assert _assert_one_error_line(captured.err) == "bfm: no command given; see 'bfm --help'."


def test_unknown_command_in_a_real_process_exits_2() -> None:
    result = _subprocess(sys.executable, "-m", "failover", "frob")
    assert result.returncode == 2
    assert result.stdout == ""
    _assert_one_error_line(result.stderr)


# --- errors raised by commands -> exit codes ----------------------------------------------


def _app_raising(
    fake_module: FakeModules, error: BaseException | None, code: int = 0
) -> typer.Typer:
    def register(cli: typer.Typer) -> None:
        @cli.command("boom")
        def boom() -> None:
            if error is not None:
                raise error
            raise typer.Exit(code)

    fake_module("bfm_test_boom", register=register)
    return build_app(("bfm_test_boom",))


@pytest.mark.parametrize(
    ("error", "exit_code", "line"),
    [
        (CheckFailed("2 shards have no owner."), 1, "bfm: 2 shards have no owner."),
        (UsageError("'5x' is not a duration."), 2, "bfm: '5x' is not a duration."),
        (Unreachable("cannot reach w at 10.0.0.3."), 3, "bfm: cannot reach w at 10.0.0.3."),
        (CliError("generic failure."), 1, "bfm: generic failure."),
        (
            StoreUnavailable("cannot reach etcd at 127.0.0.1:2379 (connection refused)"),
            3,
            "bfm: cannot reach etcd at 127.0.0.1:2379 (connection refused)",
        ),
        (StoreUnavailable(), 3, "bfm: the coordination store could not be reached."),
        (
            OutcomeUnknown("etcd answered 503 after the write was sent"),
            3,
            "bfm: etcd answered 503 after the write was sent",
        ),
        (
            RuntimeError("boom"),
            1,
            "bfm: internal error: RuntimeError: boom; rerun with BFM_DEBUG=1 for the traceback",
        ),
        (
            Conflict("lost the compare-and-set on k"),
            1,
            "bfm: internal error: Conflict: lost the compare-and-set on k; "
            "rerun with BFM_DEBUG=1 for the traceback",
        ),
        (CheckFailed("two\nlines"), 1, "bfm: two lines"),
    ],
)
def test_command_errors_map_to_exit_codes(
    error: Exception,
    exit_code: int,
    line: str,
    fake_module: FakeModules,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BFM_DEBUG", raising=False)
    cli = _app_raising(fake_module, error)
    assert run(["boom"], cli=cli) == exit_code
    captured = capsys.readouterr()
    assert _assert_one_error_line(captured.err) == line
    assert captured.out == ""


def test_bfm_debug_adds_the_traceback(
    fake_module: FakeModules, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BFM_DEBUG", "1")
    cli = _app_raising(fake_module, RuntimeError("boom"))
    assert run(["boom"], cli=cli) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("bfm: internal error: RuntimeError: boom")


@pytest.mark.parametrize("code", [0, 1, 3])
def test_typer_exit_code_is_passed_through(code: int, fake_module: FakeModules) -> None:
    assert run(["boom"], cli=_app_raising(fake_module, None, code)) == code


def test_interrupt_exits_130(fake_module: FakeModules, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["boom"], cli=_app_raising(fake_module, KeyboardInterrupt())) == 130
    assert "Traceback" not in capsys.readouterr().err


# --- durations ------------------------------------------------------------------------

DURATION_FORMS_HINT = "500ms, 15s, 5m, 2h"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15", 15.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("0", 0.0),
        ("0.1", 0.1),
        ("15s", 15.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
        ("2m30s", 150.0),
        ("1m5ms", 60.005),
        ("1d2h3m4s5ms", 93784.005),
        (" 5m\n", 300.0),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "-5",
        "+5",
        "5x",
        "5M",
        "5 m",
        "1m1h",
        "1h1h",
        "1h30",
        "s",
        "m5",
        "inf",
        "nan",
        "1e3",
        "1_000",
        "5m-",
        "0x10",
        "9" * 400,
    ],
)
def test_bad_durations_name_the_text_and_the_forms(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_duration_s(text)
    message = str(caught.value)
    assert repr(text) in message
    assert caught.value.exit_code == 2
    if text != "9" * 400:
        assert DURATION_FORMS_HINT in message


@given(
    days=st.integers(0, 400),
    hours=st.integers(0, 23),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
    millis=st.integers(0, 999),
)
def test_compound_durations_add_up_exactly(
    days: int, hours: int, minutes: int, seconds: int, millis: int
) -> None:
    text = f"{days}d{hours}h{minutes}m{seconds}s{millis}ms"
    exact = Fraction(days * 86400 + hours * 3600 + minutes * 60 + seconds) + Fraction(millis, 1000)
    assert parse_duration_s(text) == float(exact)


@given(st.integers(0, 10**12))
def test_format_then_parse_round_trips_to_the_millisecond(total_ms: int) -> None:
    seconds = total_ms / 1000
    text = format_duration_s(seconds)
    assert parse_duration_s(text) == seconds
    assert text == format_duration_s(parse_duration_s(text))


@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_decimal_seconds_parse_to_the_nearest_float(seconds: Decimal) -> None:
    text = format(seconds, "f")
    assert parse_duration_s(text) == float(seconds)
    assert parse_duration_s(text + "s") == float(seconds)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.5, "500ms"),
        (90.5, "1m30s500ms"),
        (3600, "1h"),
        (90061, "1d1h1m1s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration_s(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_format_duration_refuses_nonsense(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_duration_s(seconds)


# --- points in time ---------------------------------------------------------------------

NOON_UTC_S = 1714564800.0  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize(
    ("text", "unix_s"),
    [
        ("2024-05-01T12:00:00Z", NOON_UTC_S),
        ("2024-05-01t12:00:00z", NOON_UTC_S),
        ("2024-05-01 12:00:00Z", NOON_UTC_S),
        ("2024-05-01T14:00:00+02:00", NOON_UTC_S),
        ("2024-05-01T07:30:00-04:30", NOON_UTC_S),
        ("2024-05-01T12:00:00-00:00", NOON_UTC_S),
        ("2024-05-01T12:00:00.25Z", NOON_UTC_S + 0.25),
        ("2016-12-31T23:59:60Z", 1483228800.0),  # a leap second reads as the next second
        ("15m", 1_000_000.0 - 900),
        ("90", 1_000_000.0 - 90),
    ],
)
def test_points_in_time_parse(text: str, unix_s: float) -> None:
    assert parse_point_in_time(text, now_wall_s=1_000_000.0) == unix_s


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("2024-05-01T12:00:00", "has no UTC offset"),
        ("2024-05-01 12:00", "has no UTC offset"),
        ("2024-13-01T12:00:00Z", "is not a valid date and time"),
        ("2024-02-30T12:00:00Z", "is not a valid date and time"),
        ("2024-05-01T24:00:00Z", "is not a valid date and time"),
        ("2024-05-01T12:00:00+24:00", "is not a valid date and time"),
        ("2024-05-01T12:00:00+02:60", "is not a valid date and time"),
        ("2024-05-01", "is not a point in time"),
        ("yesterday", "is not a point in time"),
        ("-5m", "is not a point in time"),
    ],
)
def test_bad_points_in_time_name_the_text_and_the_forms(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_point_in_time(text, now_wall_s=1_000_000.0)
    assert repr(text) in str(caught.value)
    assert fragment in str(caught.value)


@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1)),
    offset_min=st.integers(-(23 * 60 + 59), 23 * 60 + 59),
)
def test_rfc3339_round_trips(moment: datetime, offset_min: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    assert parse_point_in_time(aware.isoformat(), now_wall_s=0.0) == aware.timestamp()
    as_utc = aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert parse_point_in_time(as_utc, now_wall_s=0.0) == aware.timestamp()


# --- typer option parsers -----------------------------------------------------------------


def test_option_parsers_turn_bad_input_into_bad_parameter() -> None:
    assert duration_option("5m") == 300.0
    assert duration_option(30.0) == 30.0
    assert point_in_time_option("2024-05-01T12:00:00Z") == NOON_UTC_S
    with pytest.raises(typer.BadParameter, match="'5x' is not a duration"):
        duration_option("5x")
    with pytest.raises(typer.BadParameter, match="'soon' is not a point in time"):
        point_in_time_option("soon")


def test_a_bad_option_value_exits_2_naming_the_option(
    fake_module: FakeModules, capsys: pytest.CaptureFixture[str]
) -> None:
    def register(cli: typer.Typer) -> None:
        @cli.command("wait")
        def wait(
            hold_off_s: float = typer.Option(30.0, "--hold-off", parser=duration_option),
        ) -> None:
            typer.echo(repr(hold_off_s))

    fake_module("bfm_test_wait", register=register)
    cli = build_app(("bfm_test_wait",))
    assert run(["wait", "--hold-off", "1h30m"], cli=cli) == 0
    assert capsys.readouterr().out == "5400.0\n"
    assert run(["wait"], cli=cli) == 0
    assert capsys.readouterr().out == "30.0\n"
    assert run(["wait", "--hold-off", "soon"], cli=cli) == 2
    line = _assert_one_error_line(capsys.readouterr().err)
    assert line.startswith("bfm: invalid value for '--hold-off': 'soon' is not a duration")
    assert line.endswith("see 'bfm wait --help'.")


def test_demo_refuses_a_bad_otlp_endpoint_before_making_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "failover",
            "demo",
            "--otlp-endpoint",
            "localhost:4318",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--otlp-endpoint 'localhost:4318' is not an http(s) URL" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("group", ["dashboards", "update", "k8s", "site"])
def test_a_bare_command_group_shows_its_help_and_names_the_fault(
    group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([group]) == 2
    captured = capsys.readouterr()
    assert "Commands" in captured.out
    assert _assert_one_error_line(captured.err) == (
        f"bfm: no command given; see 'bfm {group} --help'."
    )
