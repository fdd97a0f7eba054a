"""A damaged or foreign store document is refused with ValueError on every read of its
revision, counted once and logged once (``failover.runtime.documents.Parsed``)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from failover.ports import Versioned
from failover.runtime.documents import document_kind, lease_parser, ownership_parser


def refused(kind: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "bfm_refused_documents_total", {"site": "", "component": "", "kind": kind}
        )
        or 0.0
    )


def test_a_damaged_revision_is_refused_every_time_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parse = ownership_parser()
    damaged = Versioned("ownership/eap", {"component": "eap", "max_epoch": 1, "shards": 3}, "7")
    before = refused("ownership")
    with caplog.at_level(logging.WARNING, logger="bfm.store"):
        for _ in range(3):
            with pytest.raises(ValueError, match="shards"):
                parse(damaged)
    assert refused("ownership") == before + 1
    lines = [r for r in caplog.records if r.getMessage().startswith("store document")]
    assert len(lines) == 1
    assert "ownership/eap (revision 7) refused" in lines[0].getMessage()

    repaired = Versioned("ownership/eap", {"component": "eap", "max_epoch": 1, "shards": []}, "8")
    assert parse(repaired).component == "eap"
    damaged_again = Versioned("ownership/eap", [], "9")
    with pytest.raises(ValueError):
        parse(damaged_again)
    assert refused("ownership") == before + 2  # a new revision is a new refusal


def test_kinds_are_a_bounded_set_of_key_shapes() -> None:
    assert document_kind("ownership/eap") == "ownership"
    assert document_kind("sites/a/lease") == "sites/lease"
    assert document_kind("controller/leader") == "controller/leader"
    assert document_kind("admin/policy") == "admin/policy"
    assert lease_parser() is not None
