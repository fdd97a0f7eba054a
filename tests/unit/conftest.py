"""Fixtures of the Kubernetes API double shared by the unit tests that talk to it
(the store, its URLs, the doubles themselves): one double per module, and a namespace of
its own per test. Modules with another ``double`` (the Loki API double) define their own,
which pytest prefers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from support.kube_double import KubeApiDouble


@pytest.fixture(scope="module")
def double() -> Iterator[KubeApiDouble]:
    with KubeApiDouble() as started:
        yield started


@pytest.fixture
def namespace(double: KubeApiDouble) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    double.add_namespace(name)
    return name
