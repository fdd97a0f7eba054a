"""Signed license files: issue and read back, and every way a file can be wrong.

The signing keys here are throwaway keys generated per test run; no key lives in the repo.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failover.adapters.license_files import (
    LicenseKeyError,
    LicensePayload,
    MalformedLicense,
    canonical_bytes,
    evidence_from_bytes,
    generate_keypair,
    issue,
    load_private_key,
    load_public_key,
    public_key_base64,
    public_key_from_text,
    read_dongle,
    save_private_key,
    save_public_key,
)
from failover.core.licensing import DongleEvidence, DongleStatus

SYSTEM = "hemisphere-0001"
ISSUED_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z
EXPIRES_S = 1_900_000_000.0  # 2030-03-17T17:46:40Z
NOW_S = 1_800_000_000.0

PRIVATE_KEY, PUBLIC_KEY = generate_keypair()


def _payload(**change: Any) -> LicensePayload:
    fields: dict[str, Any] = {
        "system_id": SYSTEM,
        "dongle_serial": "HSD-000123",
        "issued_at_wall_s": ISSUED_S,
        "expires_at_wall_s": EXPIRES_S,
        "features": ("bfm", "geo"),
        **change,
    }
    return LicensePayload(**fields)


def _read(
    data: bytes | str,
    *,
    site: str = "a",
    now: float = NOW_S,
    key: Ed25519PublicKey = PUBLIC_KEY,
) -> DongleEvidence:
    raw = data.encode() if isinstance(data, str) else data
    return evidence_from_bytes(raw, key, site=site, system_id=SYSTEM, now_wall_s=now)


def _signed(payload_doc: Any, key: Ed25519PrivateKey = PRIVATE_KEY) -> str:
    """A file whose payload is signed whatever it holds: to reach the field checks."""
    signature = key.sign(canonical_bytes(payload_doc))
    return json.dumps({"payload": payload_doc, "signature": base64.b64encode(signature).decode()})


def _doc(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    return doc


# --- the round trip ----------------------------------------------------------------------


def test_an_issued_file_reads_back_valid_with_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "license.json"
    path.write_text(issue(_payload(), PRIVATE_KEY), encoding="utf-8")
    evidence = read_dongle(path, PUBLIC_KEY, site="b", system_id=SYSTEM, now_wall_s=NOW_S)
    assert evidence == DongleEvidence(
        site="b",
        status=DongleStatus.VALID,
        system_id=SYSTEM,
        serial="HSD-000123",
        features=("bfm", "geo"),
        expires_at_wall_s=EXPIRES_S,
    )


def test_the_file_states_its_times_in_rfc3339() -> None:
    payload = _doc(issue(_payload(), PRIVATE_KEY))["payload"]
    assert payload["issued_at"] == "2023-11-14T22:13:20Z"
    assert payload["expires_at"] == "2030-03-17T17:46:40Z"
    assert payload["site"] == "any"
    assert payload["schema"] == "bfm.license/1"


@settings(max_examples=50)
@given(
    serial=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True),
    features=st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), unique=True),
    issued_s=st.integers(min_value=0, max_value=4_000_000_000),
    lifetime_s=st.integers(min_value=1, max_value=10**9),
    site=st.sampled_from(("any", "a")),
)
def test_any_sound_payload_round_trips(
    serial: str, features: list[str], issued_s: int, lifetime_s: int, site: str
) -> None:
    payload = _payload(
        dongle_serial=serial,
        features=tuple(features),
        issued_at_wall_s=float(issued_s),
        expires_at_wall_s=float(issued_s + lifetime_s),
        site=site,
    )
    text = issue(payload, PRIVATE_KEY)
    assert LicensePayload.from_doc(_doc(text)["payload"]) == payload
    evidence = _read(text, now=float(issued_s))
    assert evidence.status is DongleStatus.VALID, evidence.reason
    assert evidence.expires_at_wall_s == issued_s + lifetime_s
    assert evidence.features == tuple(features)


def test_layout_does_not_matter_only_content_does() -> None:
    """The signature covers the canonical form, so re-indenting a file keeps it valid."""
    doc = _doc(issue(_payload(), PRIVATE_KEY))
    assert _read(json.dumps(doc, separators=(",", ":"))).status is DongleStatus.VALID
    assert _read(json.dumps(doc, indent=8, sort_keys=True)).status is DongleStatus.VALID


# --- rejected: tampered, foreign, expired ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("expires_at", "2099-01-01T00:00:00Z"),
        ("system_id", "hemisphere-0002"),
        ("dongle_serial", "HSD-000124"),
        ("site", "b"),
        ("features", ["bfm", "geo", "msm"]),
    ],
)
def test_an_edited_field_is_tampered(field: str, value: Any) -> None:
    doc = _doc(issue(_payload(), PRIVATE_KEY))
    doc["payload"][field] = value
    evidence = _read(json.dumps(doc))
    assert evidence.status is DongleStatus.TAMPERED
    assert "signature does not verify" in evidence.reason
    assert evidence.serial == "" and evidence.expires_at_wall_s is None  # nothing unverified


def test_a_changed_signature_is_tampered() -> None:
    doc = _doc(issue(_payload(), PRIVATE_KEY))
    signature = bytearray(base64.b64decode(doc["signature"]))
    signature[10] ^= 0x01
    doc["signature"] = base64.b64encode(bytes(signature)).decode()
    assert _read(json.dumps(doc)).status is DongleStatus.TAMPERED


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_single_changed_byte_yields_a_valid_license_with_other_content(
    data: st.DataObject,
) -> None:
    text = issue(_payload(), PRIVATE_KEY).encode()
    position = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    changed = bytearray(text)
    changed[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    evidence = _read(bytes(changed))
    if evidence.status is DongleStatus.VALID:
        # only whitespace between JSON tokens may change without breaking the signature
        assert json.loads(bytes(changed)) == json.loads(text)
    else:
        assert evidence.status in (DongleStatus.TAMPERED, DongleStatus.MALFORMED), evidence


def test_a_file_signed_by_another_key_is_tampered() -> None:
    other_private, _ = generate_keypair()
    assert _read(issue(_payload(), other_private)).status is DongleStatus.TAMPERED


def test_the_wrong_public_key_finds_every_file_tampered() -> None:
    _, other_public = generate_keypair()
    assert _read(issue(_payload(), PRIVATE_KEY), key=other_public).status is DongleStatus.TAMPERED


def test_another_systems_license_is_foreign() -> None:
    evidence = _read(issue(_payload(system_id="hemisphere-0002"), PRIVATE_KEY))
    assert evidence.status is DongleStatus.FOREIGN
    assert "'hemisphere-0002'" in evidence.reason and f"'{SYSTEM}'" in evidence.reason
    assert evidence.system_id == "hemisphere-0002"  # verified, so it may be shown


def test_a_license_bound_to_one_site_is_foreign_elsewhere() -> None:
    text = issue(_payload(site="a"), PRIVATE_KEY)
    assert _read(text, site="a").status is DongleStatus.VALID
    elsewhere = _read(text, site="b")
    assert elsewhere.status is DongleStatus.FOREIGN
    assert "bound to site 'a'" in elsewhere.reason


def test_a_license_is_valid_until_its_expiry_and_expired_from_then_on() -> None:
    text = issue(_payload(), PRIVATE_KEY)
    assert _read(text, now=EXPIRES_S - 1).status is DongleStatus.VALID
    expired = _read(text, now=EXPIRES_S)
    assert expired.status is DongleStatus.EXPIRED
    assert "expired at 2030-03-17T17:46:40Z" in expired.reason
    assert expired.expires_at_wall_s == EXPIRES_S


# --- rejected: missing and malformed -----------------------------------------------------


def test_a_missing_file_is_missing_and_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    evidence = read_dongle(path, PUBLIC_KEY, site="a", system_id=SYSTEM, now_wall_s=NOW_S)
    assert evidence.status is DongleStatus.MISSING
    assert str(path) in evidence.reason


def test_an_unreadable_path_is_missing_and_says_why(tmp_path: Path) -> None:
    evidence = read_dongle(tmp_path, PUBLIC_KEY, site="a", system_id=SYSTEM, now_wall_s=NOW_S)
    assert evidence.status is DongleStatus.MISSING
    assert "cannot read the license file" in evidence.reason


def test_a_problem_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "license.json"
    path.write_text("{", encoding="utf-8")
    evidence = read_dongle(path, PUBLIC_KEY, site="a", system_id=SYSTEM, now_wall_s=NOW_S)
    assert evidence.status is DongleStatus.MALFORMED
    assert evidence.reason.startswith(f"license file {path}: the file is not JSON")


def _good_payload_doc() -> dict[str, Any]:
    return _payload().to_doc()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "not JSON"),
        ("not json at all", "not JSON"),
        ("[1, 2]", "must hold a JSON object, got list"),
        ('{"payload": {}}', "exactly the fields payload and signature"),
        ('{"payload": [], "signature": ""}', "'payload' must be an object"),
        ('{"payload": {}, "signature": 7}', "'signature' must be a string"),
        ('{"payload": {}, "signature": "!!!not base64!!!"}', "'signature' is not base64"),
        ('{"payload": {}, "signature": "AAAA"}', "64 bytes in canonical base64"),
        ('{"payload": {"a": NaN}, "signature": ""}', "NaN"),
        ('{"payload": {"a": 1e999}, "signature": ""}', "too large"),
        ('{"payload": {}, "payload": {}, "signature": ""}', "'payload' appears twice"),
        pytest.param("[" * 100_000, "larger than", id="huge-file"),
        pytest.param("[" * 20_000, "not a license", id="deeply-nested"),
        pytest.param(
            '{"payload": {"a": ' + "1" * 5000 + '}, "signature": ""}',
            "not a license",
            id="int-too-long",
        ),
    ],
)
def test_a_file_that_is_not_a_signed_license_is_malformed(text: str, words: str) -> None:
    evidence = _read(text)
    assert evidence.status is DongleStatus.MALFORMED
    assert words in evidence.reason
    assert evidence.reason.endswith("reissue the license file")


def test_a_file_that_is_not_utf8_is_malformed() -> None:
    evidence = _read(b'{"payload": "\xff"}')
    assert evidence.status is DongleStatus.MALFORMED
    assert "not UTF-8" in evidence.reason


def test_a_signature_in_non_canonical_base64_is_malformed() -> None:
    doc = _doc(issue(_payload(), PRIVATE_KEY))
    raw = base64.b64decode(doc["signature"])
    # the last character before "==" carries 4 unused bits: set one, same bytes decoded
    spelled = doc["signature"][:-3] + chr(ord(doc["signature"][-3]) + 1) + "=="
    assert base64.b64decode(spelled) == raw
    doc["signature"] = spelled
    assert _read(json.dumps(doc)).status is DongleStatus.MALFORMED


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"expires_at": None}, "'expires_at' must be an RFC 3339 time"),
        ({"expires_at": 1_900_000_000}, "'expires_at' must be an RFC 3339 time"),
        ({"expires_at": "2030-03-17"}, "'expires_at' must be an RFC 3339 time"),
        ({"expires_at": "2030-03-17T17:46:40"}, "'expires_at' must be an RFC 3339 time"),
        ({"expires_at": "2030-02-30T00:00:00Z"}, "'expires_at' is not a real time"),
        ({"issued_at": "2031-01-01T00:00:00Z"}, "must be after issued_at"),
        ({"system_id": 7}, "'system_id' must be a string"),
        ({"system_id": ""}, "system_id must be"),
        ({"site": "Site A"}, "site must be 'any' or a lowercase site name"),
        ({"features": "bfm"}, "'features' must be a list of strings"),
        ({"features": ["bfm", "bfm"]}, "features must not repeat"),
        ({"schema": "bfm.license/2"}, "'schema' is 'bfm.license/2'"),
        ({"extra": 1}, "unknown field(s) extra"),
    ],
)
def test_a_signed_file_with_a_bad_field_is_malformed_and_names_it(
    change: dict[str, Any], words: str
) -> None:
    evidence = _read(_signed({**_good_payload_doc(), **change}))
    assert evidence.status is DongleStatus.MALFORMED
    assert words in evidence.reason


def test_a_signed_file_lacking_fields_names_them() -> None:
    doc = _good_payload_doc()
    del doc["dongle_serial"], doc["expires_at"]
    evidence = _read(_signed(doc))
    assert evidence.status is DongleStatus.MALFORMED
    assert "lacks field(s) dongle_serial, expires_at" in evidence.reason


def test_rfc3339_offsets_and_fractions_are_read() -> None:
    doc = {**_good_payload_doc(), "expires_at": "2030-03-17T19:46:40.5+02:00"}
    evidence = _read(_signed(doc))
    assert evidence.status is DongleStatus.VALID
    assert evidence.expires_at_wall_s == EXPIRES_S + 0.5


@settings(max_examples=300)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_reading_never_raises_and_never_finds_garbage_valid(data: bytes) -> None:
    assert _read(data).status in (DongleStatus.MALFORMED, DongleStatus.TAMPERED)


@settings(max_examples=200)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_any_signed_json_payload_is_judged_without_raising(payload: Any) -> None:
    """A correctly signed file of any shape (a buggy issuer) is malformed, never a crash."""
    if not isinstance(payload, dict):
        payload = {"payload": payload}
    try:
        text = _signed(payload)
    except ValueError:  # infinity: not JSON, so no file can hold it
        return
    assert _read(text).status is DongleStatus.MALFORMED


def test_issue_refuses_an_unsound_payload() -> None:
    with pytest.raises(MalformedLicense, match=r"expires_at .* must be after issued_at"):
        _payload(expires_at_wall_s=ISSUED_S)
    with pytest.raises(MalformedLicense, match="dongle_serial"):
        _payload(dongle_serial="has spaces")
    with pytest.raises(MalformedLicense, match="finite wall seconds"):
        _payload(expires_at_wall_s=float("inf"))


# --- keys --------------------------------------------------------------------------------


def test_keys_round_trip_as_pem(tmp_path: Path) -> None:
    private_path, public_path = tmp_path / "signing.pem", tmp_path / "public.pem"
    save_private_key(private_path, PRIVATE_KEY)
    save_public_key(public_path, PUBLIC_KEY)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    text = issue(_payload(), load_private_key(private_path))
    assert _read(text, key=load_public_key(public_path)).status is DongleStatus.VALID


def test_keys_round_trip_as_raw_base64(tmp_path: Path) -> None:
    public_path = tmp_path / "public.b64"
    public_path.write_text(public_key_base64(PUBLIC_KEY) + "\n")
    assert _read(issue(_payload(), PRIVATE_KEY), key=load_public_key(public_path)).status is (
        DongleStatus.VALID
    )
    private_path = tmp_path / "signing.b64"
    raw = PRIVATE_KEY.private_bytes_raw()
    private_path.write_text(base64.b64encode(raw).decode())
    assert load_private_key(private_path).private_bytes_raw() == raw


def test_a_private_key_is_never_overwritten_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    save_private_key(path, PRIVATE_KEY)
    other, _ = generate_keypair()
    with pytest.raises(LicenseKeyError, match="already exists"):
        save_private_key(path, other)
    assert load_private_key(path).private_bytes_raw() == PRIVATE_KEY.private_bytes_raw()
    path.chmod(0o644)
    save_private_key(path, other, overwrite=True)
    assert load_private_key(path).private_bytes_raw() == other.private_bytes_raw()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "neither PEM nor a base64 Ed25519 key"),
        ("c2hvcnQ=", "neither PEM nor a base64 Ed25519 key"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a readable"),
    ],
)
def test_an_unreadable_public_key_is_a_clear_error(
    tmp_path: Path, content: str, words: str
) -> None:
    path = tmp_path / "public.pem"
    path.write_text(content)
    with pytest.raises(LicenseKeyError, match=words) as caught:
        load_public_key(path)
    assert str(path) in str(caught.value)


def test_a_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LicenseKeyError, match=r"cannot read the key file .*nowhere\.pem"):
        load_private_key(tmp_path / "nowhere.pem")


def test_a_public_key_is_not_taken_for_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "public.pem"
    save_public_key(path, PUBLIC_KEY)
    with pytest.raises(LicenseKeyError, match="not a readable private key PEM"):
        load_private_key(path)


def test_a_public_key_reads_from_a_configuration_value() -> None:
    key = public_key_from_text(public_key_base64(PUBLIC_KEY))
    assert public_key_base64(key) == public_key_base64(PUBLIC_KEY)
