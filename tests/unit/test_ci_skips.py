"""tests/conftest.py: with CI=true a skipped test fails the run; without it, it stays a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SKIPPING_TESTS = """
import shutil

import pytest


def test_needs_a_binary():
    if shutil.which("no-such-binary-for-bfm") is None:
        pytest.skip("no-such-binary-for-bfm is not installed")


@pytest.mark.skipif(True, reason="needs root")
def test_needs_root():
    pass


@pytest.mark.xfail(reason="known bug", strict=True)
def test_known_bug():
    assert False


def test_plain():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner=SKIPPING_TESTS)
    return pytester


def test_skips_fail_the_run_under_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "no:cacheprovider", "-p", "no:kmock")
    # The skip in the test body fails; the skipif during set-up becomes an error.
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped under CI=true*no-such-binary-for-bfm*"])
    result.stdout.fnmatch_lines(["*skipped under CI=true*needs root*"])


def test_module_level_skip_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(
        test_module_skip="import pytest\npytest.importorskip('no_such_module_for_bfm')\n"
    )
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:kmock")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skipped under CI=true*no_such_module_for_bfm*"])


def test_skips_stay_skips_outside_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest("-p", "no:cacheprovider", "-p", "no:kmock")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
