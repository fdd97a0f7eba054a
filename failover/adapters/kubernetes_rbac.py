"""Every Kubernetes API verb and resource BFM's Kubernetes adapters use: the one list RBAC follows.

``KUBERNETES_API_USE`` is the source of truth. A Role for BFM's service account grants
exactly these rules (:func:`role_rules` renders them in a Role's ``rules`` shape, so the
Helm chart can be generated from or tested against them), and the tests prove the adapters
send nothing outside the list: the Kubernetes API double records every request during the
store contract tests and ``tests/unit/test_kubernetes_store.py`` compares (see
``docs/kubernetes.md``).

Only the store (:mod:`failover.adapters.kubernetes_store`) is built so far; the platform
adapter adds its rows (nodes, pods, evictions, ...) when it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CORE_GROUP = ""  # the API group of ConfigMaps, Pods, Nodes: "" in RBAC, /api/v1 in URLs
COORDINATION_GROUP = "coordination.k8s.io"


@dataclass(frozen=True)
class ApiUse:
    """One resource of one API group and the verbs used on it, with the reason."""

    group: str  # "" for the core group
    resource: str  # the plural resource name, as RBAC and URLs spell it
    verbs: tuple[str, ...]  # RBAC verbs: get, list, watch, create, update, patch, delete
    namespaced: bool  # True: a Role in BFM's namespace grants it; False: a ClusterRole
    used_by: str  # the module that sends these requests
    why: str

    @property
    def group_resource(self) -> str:
        """``resource.group`` as kubectl prints it: ``leases.coordination.k8s.io``."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


# Verbs in the order RBAC documents them; kept sorted that way so diffs stay small.
_STORE_VERBS = ("get", "list", "create", "update", "delete")

KUBERNETES_API_USE: tuple[ApiUse, ...] = (
    ApiUse(
        group=COORDINATION_GROUP,
        resource="leases",
        verbs=_STORE_VERBS,
        namespaced=True,
        used_by="failover.adapters.kubernetes_store",
        why="the controllers' leader lease and each site's lease, one Lease per key",
    ),
    ApiUse(
        group=CORE_GROUP,
        resource="configmaps",
        verbs=_STORE_VERBS,
        namespaced=True,
        used_by="failover.adapters.kubernetes_store",
        why="every other store document (ownership, policy, events, ...), one ConfigMap per key",
    ),
)


def allowed(group: str, resource: str, verb: str, *, namespaced: bool = True) -> bool:
    """Whether ``verb`` on ``resource`` of ``group`` is in ``KUBERNETES_API_USE``."""
    return any(
        use.group == group
        and use.resource == resource
        and verb in use.verbs
        and use.namespaced == namespaced
        for use in KUBERNETES_API_USE
    )


def role_rules(*, namespaced: bool = True) -> list[dict[str, Any]]:
    """The ``rules`` of a Role (``namespaced``) or ClusterRole granting exactly the list."""
    return [
        {"apiGroups": [use.group], "resources": [use.resource], "verbs": list(use.verbs)}
        for use in KUBERNETES_API_USE
        if use.namespaced == namespaced
    ]
