"""Suite-wide test hooks: with CI=true a skipped test fails the run.

CI installs every binary and privilege the tests need (ARCHITECTURE.md section 7, test
tiers), so a skip there means a missing install step, not an optional extra. Expected
failures (``xfail``) are left alone. Hypothesis runs without per-example deadlines: the
suite asserts correctness, never speed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

import bfm_observe

CI_ENV = "CI"

settings.register_profile("bfm", deadline=None)
settings.load_profile("bfm")


def ci_forbids_skips() -> bool:
    """True when the environment says this is a CI run (``CI=true``, as CI systems set)."""
    return os.environ.get(CI_ENV, "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    _fail_if_skipped(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    report: pytest.CollectReport = yield
    _fail_if_skipped(report)
    return report


def _fail_if_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not ci_forbids_skips():
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under {CI_ENV}=true, where every test must run (make .ci/run install "
        f"what it needs): {reason}"
    )


@pytest.fixture
def clean_telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No telemetry configured before or after the test, and no OTEL_* or BFM_LOKI_URL
    from the environment (bfm_observe reads them)."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name == "BFM_LOKI_URL":
            monkeypatch.delenv(name)
    bfm_observe.shutdown()
    yield
    bfm_observe.shutdown()
