"""The redaction rules of ``bfm_observe.redaction``: secrets by name and by shape are
replaced, everything else is left as it was."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bfm_observe.redaction import (
    REDACTED,
    is_secret_name,
    redact_any,
    redact_mapping,
    redact_text,
)

SECRET = st.text(alphabet=string.ascii_letters + string.digits + "-_.~+/", min_size=8, max_size=40)
SHAPES = [
    "password={}",
    "db_password: {}",
    '{{"api_key": "{}"}}',
    "Authorization: Bearer {}",
    "authorization=Basic {}",
    "{{'Authorization': 'Token {}'}}",
    "bearer {}",
    "etcd://root:{}@10.0.0.1:2379/bfm/",
    "https://user:{}@loki.example:3100/loki/api/v1/push",
    "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\n{}",  # cut off before its end line
    "client_secret={} next=1",
    "license-key = '{}'",
    'config={{"store": {{"api_key": "{}"}}}}',  # a pair inside another pair's value
    "cfg=[password={}]",
]


@pytest.mark.parametrize("shape", SHAPES)
@given(secret=SECRET)
def test_every_shape_loses_its_secret(shape: str, secret: str) -> None:
    if "://" in shape:
        secret = secret.replace("/", "%2F")  # a URL's password is percent-encoded
    text = f"before {shape.format(secret)} after"
    redacted = redact_text(text)
    assert secret not in redacted
    assert REDACTED in redacted
    assert redacted.startswith("before ")


@pytest.mark.parametrize(
    "text",
    [
        "site a down after 1.6 s; 12 shards moved to b (epoch 7)",
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
        "author=bob tokens_total=5 public_key=MCowBQYDK2VwAyEA",
        'GET /loki/api/v1/query_range?query={site="a"}&limit=100',
        "Authorization header missing: give --token-file",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("db.password", True),
        ("http.request.header.authorization", True),
        ("license_key", True),
        ("signing-key", True),
        ("BFM_LOKI_TOKEN", True),
        ("x-api-key", True),
        ("public_key", False),
        ("trace_id", False),
        ("author", False),
        ("tokens_total", False),
        ("token_type", False),
    ],
)
def test_names_that_hold_secrets(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_mappings_are_redacted_by_name_and_values_by_shape_all_the_way_down() -> None:
    doc = {
        "password": "hunter2hunter2",
        "store": {"url": "etcd://root:s3cr3tpass@h:2379", "token": ["a", "b"]},
        "shards": 4,
        "ok": True,
        "note": None,
        "items": ("x", "api_key=abcdefgh"),
    }
    assert redact_mapping(doc) == {
        "password": REDACTED,
        "store": {"url": f"etcd://root:{REDACTED}@h:2379", "token": REDACTED},
        "shards": 4,
        "ok": True,
        "note": None,
        "items": ("x", f"api_key={REDACTED}"),
    }


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        _children := (lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)),
    )
)
def test_any_value_keeps_its_shape(value: object) -> None:
    """Redaction never raises and never changes a value's type or a container's size."""
    out = redact_any(value)
    assert type(out) is type(value)
    if isinstance(value, list | dict):
        assert len(out) == len(value)  # type: ignore[arg-type]
