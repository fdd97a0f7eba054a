"""`bfm license` against a sqlite store that a leader's ``LicenseKeeper`` writes, with real
signed license files; and `bfm license keygen|issue` making files that verify."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.adapters.fake_clock import FakeClock
from failover.adapters.license_config import dev_setup
from failover.adapters.license_dongle import LicenseFileDongle
from failover.adapters.license_files import load_public_key, read_dongle
from failover.adapters.sqlite_store import SqliteStore
from failover.cli.main import run
from failover.cli.status import license_line, read_license_summary
from failover.core.licensing import DongleStatus
from failover.runtime.documents import LEADER_KEY, ownership_key
from failover.runtime.license_keeper import DonglePublisher, LicenseKeeper, LicensePolicy

SITES = ("a", "b", "w")


class Licensed:
    def __init__(self, tmp_path: Path) -> None:
        self.store = SqliteStore(tmp_path / "bfm.db")
        self.url = f"sqlite://{tmp_path / 'bfm.db'}"
        self.store.create(LEADER_KEY, {"holder": "w"})  # what `running_system` looks for
        self.store.create(ownership_key("eap"), {"schema": "test"})
        self.clock = FakeClock(start_wall_s=time.time())
        self.config = dev_setup(
            tmp_path / "license", system_id="sys-1", sites=SITES, now_wall_s=time.time(), grace_s=60
        )
        key = self.config.public_key()
        self.publishers = [
            DonglePublisher(
                self.store,
                LicenseFileDongle(self.config.license_file(s), key, site=s, system_id="sys-1"),
                site=s,
                clock=self.clock,
            )
            for s in SITES
        ]
        self.keeper = LicenseKeeper(
            self.store, LicensePolicy("sys-1", 60.0), site="w", clock=self.clock
        )

    def step(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        for publisher in self.publishers:
            publisher.tick()
        self.keeper.tick()


@pytest.fixture
def licensed(tmp_path: Path) -> Iterator[Licensed]:
    system = Licensed(tmp_path)
    yield system
    system.store.close()


def bfm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_shows_each_dongle_and_the_state(
    licensed: Licensed, capsys: pytest.CaptureFixture[str]
) -> None:
    licensed.step()
    code, out, _ = bfm(capsys, "license", f"--store={licensed.url}")
    assert code == 0, out
    assert out.startswith("license: LICENSED: licensed by the dongle at sites a, b, w")
    for site in SITES:
        assert any(line.split()[:3] == [site, "yes", "valid"] for line in out.splitlines())
    assert "HSD-DEV-0001" in out


def test_unlicensed_exits_1_and_names_the_fix(
    licensed: Licensed, capsys: pytest.CaptureFixture[str]
) -> None:
    licensed.step()
    for site in SITES:
        licensed.config.license_file(site).unlink()
    licensed.step()
    licensed.step(61.0)
    code, out, _ = bfm(capsys, "license", "status", f"--store={licensed.url}")
    assert code == 1
    assert out.startswith("license: UNLICENSED:")
    assert "install a valid license file" in out
    assert "a: no license file at" in out
    code, out, _ = bfm(capsys, "license", f"--store={licensed.url}", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["state"] == "unlicensed" and doc["grace_remaining_s"] == 0.0


def test_no_verdict_says_licensing_is_not_configured(
    licensed: Licensed, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = bfm(capsys, "license", f"--store={licensed.url}")
    assert code == 1 and "licensing is not configured" in err


def test_keygen_and_issue_make_a_file_that_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    code, _, _ = bfm(capsys, "license", "keygen", f"--out={keys}")
    assert code == 0 and (keys / "signing.key").stat().st_mode & 0o077 == 0
    code, _, _ = bfm(capsys, "license", "keygen", f"--out={keys}")
    assert code == 2  # never overwrites a signing key
    out_file = tmp_path / "a.license"
    code, _, err = bfm(
        capsys,
        *("license", "issue", f"--key={keys / 'signing.key'}", "--system-id=sys-9"),
        *("--valid-for=30d", "--site=a", f"--out={out_file}"),
    )
    assert code == 0, err
    evidence = read_dongle(
        out_file,
        load_public_key(keys / "public.key"),
        site="a",
        system_id="sys-9",
        now_wall_s=time.time(),
    )
    assert evidence.status is DongleStatus.VALID
    assert evidence.expires_at_wall_s is not None
    assert 29.9 < (evidence.expires_at_wall_s - time.time()) / 86400 < 30.1


def test_issue_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = bfm(
        capsys, "license", "issue", f"--key={tmp_path / 'none.key'}", "--system-id=s"
    )
    assert code == 2 and "cannot read the key file" in err
    bfm(capsys, "license", "keygen", f"--out={tmp_path}")
    code, _, err = bfm(
        capsys, "license", "issue", f"--key={tmp_path / 'signing.key'}", "--system-id=bad id!"
    )
    assert code == 2 and "system_id" in err


def test_the_status_line_says_who_licenses_and_the_grace_left(licensed: Licensed) -> None:
    assert license_line(read_license_summary(licensed.store)) == "license: not configured"
    licensed.step()
    line = license_line(read_license_summary(licensed.store))
    assert line.startswith("license: licensed by a, b, w (dongles: a valid, b valid, w valid")
    for site in SITES:
        licensed.config.license_file(site).unlink()
    licensed.step()
    line = license_line(read_license_summary(licensed.store))
    assert line.startswith("license: grace, grace left 0.0 h (dongles: a missing"), line
