"""Every Kubernetes API verb and resource BFM's Kubernetes adapters use: the one list RBAC follows.

``KUBERNETES_API_USE`` is the source of truth. A Role for BFM's service account grants
exactly these rules (:func:`role_rules` renders them in a Role's ``rules`` shape, so the
Helm chart can be generated from or tested against them), and the tests prove the adapters
send nothing outside the list: the Kubernetes API double records every request during the
store contract tests and ``tests/unit/test_kubernetes_store.py`` compares (see
``docs/kubernetes.md``).

Three kinds of grant: a Role in BFM's namespace (``namespaced`` and ``namespace`` ""), a
Role in another namespace (the node Leases in ``kube-node-lease``), and a ClusterRole for
cluster-scoped resources (Nodes). Two service accounts: the site processes' (``SITE``), and
the reference backbone's component pods' (``COMPONENTS``), which only read the ownership
documents through the store.
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
    namespaced: bool  # True: a Role grants it; False: a ClusterRole (cluster-scoped)
    used_by: str  # the module that sends these requests
    why: str
    namespace: str = ""  # the Role's namespace: "" is BFM's own
    account: str = "site"  # whose service account: SITE or COMPONENTS

    @property
    def group_resource(self) -> str:
        """``resource.group`` as kubectl prints it: ``leases.coordination.k8s.io``."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


# Verbs in the order RBAC documents them; kept sorted that way so diffs stay small.
_STORE_VERBS = ("get", "list", "create", "update", "delete")
STORE_MODULE = "failover.adapters.kubernetes_store"
PLATFORM_MODULE = "failover.adapters.kubernetes_platform"
COMPONENT_MODULE = "failover.workload.component_process"
NODE_LEASE_NAMESPACE = "kube-node-lease"
SITE = "site"
COMPONENTS = "components"

KUBERNETES_API_USE: tuple[ApiUse, ...] = (
    ApiUse(
        group=COORDINATION_GROUP,
        resource="leases",
        verbs=_STORE_VERBS,
        namespaced=True,
        used_by=STORE_MODULE,
        why="the controllers' leader lease and each site's lease, one Lease per key",
    ),
    ApiUse(
        group=CORE_GROUP,
        resource="configmaps",
        verbs=_STORE_VERBS,
        namespaced=True,
        used_by=STORE_MODULE,
        why="every other store document (ownership, policy, events, ...), one ConfigMap per key",
    ),
    ApiUse(
        group=CORE_GROUP,
        resource="pods",
        verbs=("get", "list", "create", "patch", "delete"),
        namespaced=True,
        used_by=PLATFORM_MODULE,
        why="one bare pod per component instance; patch: the serving label (routing)",
    ),
    ApiUse(
        group=CORE_GROUP,
        resource="pods/eviction",
        verbs=("create",),
        namespaced=True,
        used_by=PLATFORM_MODULE,
        why="version changes and site drains evict, so PodDisruptionBudgets are respected",
    ),
    ApiUse(
        group=CORE_GROUP,
        resource="nodes",
        verbs=("list", "patch"),
        namespaced=False,
        used_by=PLATFORM_MODULE,
        why="sites from zone labels, Ready conditions; patch: the out-of-service taint, cordon",
    ),
    ApiUse(
        group=COORDINATION_GROUP,
        resource="leases",
        verbs=("list",),
        namespaced=True,
        used_by=PLATFORM_MODULE,
        why="the kubelets' node Leases: a node whose Lease stops changing is unreachable",
        namespace=NODE_LEASE_NAMESPACE,
    ),
    ApiUse(
        group=COORDINATION_GROUP,
        resource="leases",
        verbs=("list",),
        namespaced=True,
        used_by=COMPONENT_MODULE,
        why="opening the store: one list (limit 1) proves the Leases API answers",
        account=COMPONENTS,
    ),
    ApiUse(
        group=CORE_GROUP,
        resource="configmaps",
        verbs=("list",),
        namespaced=True,
        used_by=COMPONENT_MODULE,
        why="the ownership documents, one list a poll: the epochs the modules check, the "
        "router's owners",
        account=COMPONENTS,
    ),
)


def allowed(
    group: str,
    resource: str,
    verb: str,
    *,
    namespaced: bool = True,
    namespace: str = "",
    account: str = SITE,
) -> bool:
    """Whether ``verb`` on ``resource`` of ``group`` is granted to ``account`` (in
    ``namespace``, "" for BFM's own, when ``namespaced``)."""
    return any(
        use.group == group and use.resource == resource and verb in use.verbs
        for use in _uses(namespaced=namespaced, namespace=namespace, account=account)
    )


def role_rules(
    *,
    namespaced: bool = True,
    namespace: str = "",
    used_by: str | None = None,
    account: str = SITE,
) -> list[dict[str, Any]]:
    """The ``rules`` of ``account``'s Role in ``namespace`` ("" BFM's own; ``namespaced``)
    or of its ClusterRole, granting exactly the list (of one module, with ``used_by``)."""
    return [
        {"apiGroups": [use.group], "resources": [use.resource], "verbs": list(use.verbs)}
        for use in _uses(namespaced=namespaced, namespace=namespace, account=account)
        if used_by in (None, use.used_by)
    ]


def granted(*, used_by: str | None = None, account: str | None = None) -> set[tuple[str, str, str]]:
    """Every (verb, group, resource) the list grants (to one module, one account)."""
    return {
        (verb, use.group, use.resource)
        for use in KUBERNETES_API_USE
        if used_by in (None, use.used_by) and account in (None, use.account)
        for verb in use.verbs
    }


def _uses(*, namespaced: bool, namespace: str, account: str) -> list[ApiUse]:
    return [
        use
        for use in KUBERNETES_API_USE
        if use.account == account
        and use.namespaced == namespaced
        and (not namespaced or use.namespace == namespace)
    ]
