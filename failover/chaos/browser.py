"""A headless Chromium for looking at generated pages: a screenshot, or the DOM after the
page's scripts ran (Debian's ``chromium``; ``.ci/system-packages`` installs it).

Each call starts one browser with a private profile in a temporary folder (removed
afterwards), bounded by ``timeout_s``; on timeout only that browser's own process group
is ended. ``--no-sandbox`` because the tests run as root, where Chromium's sandbox
refuses to start. Failures raise ``BrowserError`` with the tail of Chromium's stderr.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

BINARY_NAMES = ("chromium", "chromium-browser", "google-chrome")
APT_PACKAGE = "chromium"
VIRTUAL_TIME_BUDGET_MS = 10_000  # page time for scripts and timers before the capture
_STDERR_TAIL_CHARS = 2000


class BrowserError(RuntimeError):
    """Chromium is missing, failed, or did not finish in time; the message says which."""


def chromium_binary() -> str | None:
    """The path of a Chromium on PATH, or None."""
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(
    html: Path,
    png: Path,
    *,
    width_px: int = 1600,
    height_px: int = 2000,
    timeout_s: float = 60.0,
) -> Path:
    """A PNG of ``html`` as a ``width_px`` x ``height_px`` window shows it; returns ``png``."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        png.unlink()
    _run(
        html,
        [f"--window-size={width_px},{height_px}", f"--screenshot={png.resolve()}"],
        timeout_s=timeout_s,
    )
    if not png.is_file() or png.stat().st_size == 0:
        raise BrowserError(f"Chromium finished but wrote no screenshot at {png}")
    return png


def rendered_dom(html: Path, timeout_s: float = 60.0) -> str:
    """The page's DOM, serialized, once its scripts have run."""
    return _run(html, ["--dump-dom"], timeout_s=timeout_s)


def _run(html: Path, extra: list[str], *, timeout_s: float) -> str:
    binary = chromium_binary()
    if binary is None:
        raise BrowserError(
            "no Chromium on PATH; install it (DEBIAN_FRONTEND=noninteractive apt-get install "
            f"-y {APT_PACKAGE})"
        )
    if not html.is_file():
        raise BrowserError(f"no page at {html}")
    with tempfile.TemporaryDirectory(prefix="bfm-chromium-") as profile:
        stderr_path = Path(profile) / "stderr.log"
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--mute-audio",
            f"--user-data-dir={Path(profile) / 'profile'}",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
            *extra,
            html.resolve().as_uri(),
        ]
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(  # noqa: S603 - Chromium from PATH, fixed arguments
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # its own process group: ended as one, nothing else
            )
            try:
                out, _ = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise BrowserError(
                    f"Chromium did not finish {html.name} within {timeout_s:g} s; "
                    f"its stderr ends with:\n{_tail(stderr_path)}"
                ) from None
            finally:
                _end_group(process)
        if process.returncode != 0:
            raise BrowserError(
                f"Chromium exited with {process.returncode} on {html.name}; "
                f"its stderr ends with:\n{_tail(stderr_path)}"
            )
        return out.decode("utf-8", errors="replace")


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """End what is left of the browser's own process group (helpers may outlive it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-_STDERR_TAIL_CHARS:].strip() or "(nothing)"
    except OSError:
        return "(no stderr)"
