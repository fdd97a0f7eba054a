"""What the Kubernetes platform writes and reads: pod bodies, pod states, node facts, taints.

Pure functions, no client and no I/O, so the mapping is tested on its own and documented
in ``docs/kubernetes.md`` (:mod:`failover.adapters.kubernetes_platform` sends them):

- One component instance is one bare Pod (``restartPolicy: Never``: BFM's supervisor
  decides restarts, never the kubelet), named ``bfm-<site>-<component>-<suffix>`` with a
  random suffix (a new pod per start: its name is the ``instance_id``), pinned to its site
  by ``nodeSelector`` on ``topology.kubernetes.io/zone``. Labels name the site, the
  component and whether the site takes client traffic (``SERVING_LABEL``: the serving
  Services select ``"true"``); the version is an annotation and ``BFM_VERSION`` in the
  container's environment (a version may be 64 characters, a label value only 63).
- A pod's state: Pending or Running is ``RUNNING``; Failed or Succeeded is ``EXITED`` with
  the container's exit code (``-N`` when the runtime reports it was killed by signal N, as
  the local platform reports a killed process); a pod that is terminating or gone although
  BFM did not ask is ``EXITED`` too (evicted, deleted by someone, its node lost).
- Sites are the zones of the nodes (zone ``A`` is site ``a``). A node is reachable while
  its ``Ready`` condition is ``True`` and its ``kube-node-lease`` Lease keeps changing: the
  Lease is judged as BFM judges its own leases, by no change for its
  ``leaseDurationSeconds`` on the caller's monotonic clock, never by its ``renewTime``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from failover.adapters.kubernetes_pod_overlay import apply_overlay
from failover.ports import InstanceState

LABEL_DOMAIN = "bfm.hemisphere.io"
SITE_LABEL = f"{LABEL_DOMAIN}/site"
COMPONENT_LABEL = f"{LABEL_DOMAIN}/component"
PLATFORM_LABEL = f"{LABEL_DOMAIN}/platform"  # several platforms may share a namespace
SERVING_LABEL = f"{LABEL_DOMAIN}/serving"  # "true": the site's Services send it traffic
VERSION_ANNOTATION = f"{LABEL_DOMAIN}/version"
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ZONE_LABEL = "topology.kubernetes.io/zone"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
OUT_OF_SERVICE_TAINT = {
    "key": "node.kubernetes.io/out-of-service",
    "value": "nodeshutdown",
    "effect": "NoExecute",
}
NODE_LEASE_NAMESPACE = "kube-node-lease"
DEFAULT_NODE_LEASE_S = 40.0  # the kubelet's default leaseDurationSeconds
DEFAULT_IMAGE = "ghcr.io/hemisphere/bfm"


def zone_of(site: str) -> str:
    """The zone label value of a site's nodes (site ``a``: zone ``A``)."""
    return site.upper()


def site_of(zone: str) -> str:
    """The site a zone label value names."""
    return zone.lower()


def pod_name(site: str, component: str) -> str:
    """A new pod's name: one per start, so a new instance never meets its predecessor."""
    return f"bfm-{site}-{component}-{secrets.token_hex(3)}".lower()


def selector(platform: str, site: str | None = None, component: str | None = None) -> str:
    """The label selector of a platform's pods (of one site, of one instance)."""
    parts = [f"{PLATFORM_LABEL}={platform}"]
    if site is not None:
        parts.append(f"{SITE_LABEL}={site}")
    if component is not None:
        parts.append(f"{COMPONENT_LABEL}={component}")
    return ",".join(parts)


def image_ref(image: str, version: str) -> str:
    """The image of an instance at ``version``: ``image`` tagged with the version, unless
    ``image`` already names a tag or digest (``repo:1.2``, ``repo@sha256:...``): then every
    version runs that image (the reference backbone's components are in BFM's own image,
    their version is only what ``--version`` reports)."""
    last = image.rsplit("/", 1)[-1]  # a registry's port ("host:5000/bfm") is no tag
    return image if "@" in image or ":" in last else f"{image}:{version}"


@dataclass(frozen=True)
class PodTemplate:
    """How the platform's pods run: image, command, grace period, extra arguments."""

    platform: str = "bfm"  # the PLATFORM_LABEL value
    image: str = DEFAULT_IMAGE  # a repository: the version is the tag (see image_ref)
    command: tuple[str, ...] = ("python", "-m", "failover")
    extra_args: tuple[str, ...] = ()  # after the component arguments (e.g. --run-dir=...)
    env: tuple[tuple[str, str], ...] = ()
    grace_s: int = 5  # terminationGracePeriodSeconds of a stop by the kubelet's own accord
    # what the installation adds (kubernetes_pod_overlay: the template= file), checked
    overlay: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def body(
        self, name: str, site: str, component: str, version: str, *, serving: bool
    ) -> dict[str, Any]:
        """The Pod of one start of ``site``/``component`` at ``version``."""
        env = [
            *({"name": k, "value": v} for k, v in self.env),
            {"name": "BFM_SITE", "value": site},
            {"name": "BFM_COMPONENT", "value": component},
            {"name": "BFM_VERSION", "value": version},
        ]
        args = [
            "component",
            "run",
            f"--site={site}",
            f"--component={component}",
            f"--version={version}",
            *self.extra_args,
        ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {
                    NAME_LABEL: "bfm-component",
                    MANAGED_BY_LABEL: "bfm",
                    PLATFORM_LABEL: self.platform,
                    SITE_LABEL: site,
                    COMPONENT_LABEL: component,
                    SERVING_LABEL: "true" if serving else "false",
                },
                "annotations": {VERSION_ANNOTATION: version},
            },
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {ZONE_LABEL: zone_of(site)},
                "terminationGracePeriodSeconds": self.grace_s,
                "containers": [
                    {
                        "name": component,
                        "image": image_ref(self.image, version),
                        "command": list(self.command),
                        "args": args,
                        "env": env,
                    }
                ],
            },
        }
        return apply_overlay(pod, self.overlay) if self.overlay else pod


@dataclass(frozen=True)
class PodState:
    """What a pod shows of one instance."""

    state: InstanceState
    exit_code: int | None = None


def pod_state(pod: Mapping[str, Any] | None, *, wanted: bool) -> PodState:
    """The instance state a pod shows (``None``: no such pod); ``wanted``: BFM asked it to
    run, so its end or disappearance is a crash (see the module docstring)."""
    if not wanted:
        return PodState(InstanceState.STOPPED)
    if pod is None:
        return PodState(InstanceState.EXITED)
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase in ("Failed", "Succeeded"):
        return PodState(InstanceState.EXITED, _exit_code(status))
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return PodState(InstanceState.EXITED)
    return PodState(InstanceState.RUNNING)


def _exit_code(status: Mapping[str, Any]) -> int | None:
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if isinstance(terminated, Mapping):
            signal = terminated.get("signal")
            if isinstance(signal, int) and signal > 0:
                return -signal
            code = terminated.get("exitCode")
            return code if isinstance(code, int) else None
    return None


def pod_version(pod: Mapping[str, Any]) -> str | None:
    """The version a pod was started at (its annotation)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    version = annotations.get(VERSION_ANNOTATION)
    return version if isinstance(version, str) else None


# --- nodes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeView:
    """One node as the platform judges it."""

    name: str
    site: str
    ready: bool  # the Ready condition is True
    lease_fresh: bool  # its node Lease changed within its duration (or was just first seen)
    out_of_service: bool  # it carries the out-of-service taint
    control_plane: bool

    @property
    def up(self) -> bool:
        """Kubernetes sees the node alive: Ready and its Lease renewed."""
        return self.ready and self.lease_fresh


def node_site(node: Mapping[str, Any]) -> str | None:
    """The site a node belongs to, from its zone label (None: no zone)."""
    zone = ((node.get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL)
    return site_of(zone) if isinstance(zone, str) and zone else None


def node_ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def has_out_of_service(node: Mapping[str, Any]) -> bool:
    return any(_is_out_of_service(t) for t in (node.get("spec") or {}).get("taints") or [])


def _is_out_of_service(taint: Mapping[str, Any]) -> bool:
    return bool(
        taint.get("key") == OUT_OF_SERVICE_TAINT["key"]
        and taint.get("effect") == OUT_OF_SERVICE_TAINT["effect"]
    )


def taints_with_out_of_service(
    node: Mapping[str, Any], *, present: bool
) -> list[dict[str, Any]] | None:
    """The node's taints with the out-of-service taint added (``present``) or removed;
    ``None`` when they already are so (nothing to write)."""
    taints = [dict(t) for t in (node.get("spec") or {}).get("taints") or []]
    if any(_is_out_of_service(t) for t in taints) == present:
        return None
    if present:
        return [*taints, dict(OUT_OF_SERVICE_TAINT)]
    return [t for t in taints if not _is_out_of_service(t)]


def is_control_plane(node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return CONTROL_PLANE_LABEL in labels


class LeaseWatch:
    """Node Leases judged by no change for their duration on the caller's clock."""

    def __init__(self) -> None:
        # node -> (what the Lease showed, when that was first seen)
        self._seen: dict[str, tuple[tuple[object, ...], float]] = {}

    def fresh(self, node: str, lease: Mapping[str, Any] | None, now_s: float) -> bool:
        """Whether ``node``'s Lease changed within its duration (``None``: no Lease)."""
        if lease is None:
            self._seen.pop(node, None)
            return False
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        shown = (meta.get("resourceVersion"), spec.get("renewTime"), spec.get("holderIdentity"))
        duration_s = spec.get("leaseDurationSeconds")
        if not isinstance(duration_s, int | float) or duration_s <= 0:
            duration_s = DEFAULT_NODE_LEASE_S
        before = self._seen.get(node)
        if before is None or before[0] != shown:
            self._seen[node] = (shown, now_s)
            return True
        return now_s - before[1] < float(duration_s)


def node_views(
    nodes: Sequence[Mapping[str, Any]],
    leases: Mapping[str, Mapping[str, Any]],
    watch: LeaseWatch,
    now_s: float,
) -> list[NodeView]:
    """Every node with a zone, judged (``leases``: node name -> its Lease)."""
    views = []
    for node in nodes:
        site = node_site(node)
        name = (node.get("metadata") or {}).get("name")
        if site is None or not isinstance(name, str):
            continue
        views.append(
            NodeView(
                name=name,
                site=site,
                ready=node_ready(node),
                lease_fresh=watch.fresh(name, leases.get(name), now_s),
                out_of_service=has_out_of_service(node),
                control_plane=is_control_plane(node),
            )
        )
    return sorted(views, key=lambda v: (v.site, v.name))
