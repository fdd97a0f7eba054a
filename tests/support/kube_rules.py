"""What kube-apiserver decides and kmock's emulator does not: validation, selectors, patches.

Part of the Kubernetes API double (``kube_double.py``, whose docstring lists what the
double adds to kmock); kept apart so each module stays small. Pure functions of objects
(dicts as on the wire): errors, names, labels and label selectors, the rules for Pods,
Nodes and PodDisruptionBudgets (validation, pod spec immutability, the disruption
controller's budget status, the eviction decision), and the three patch formats.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import kmock

MAX_ANNOTATION_BYTES = 256 * 1024
MAX_CONFIG_MAP_DATA_BYTES = 1024 * 1024

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


def label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def label_value_ok(value: object) -> bool:
    return isinstance(value, str) and (
        value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)
    )


def _has(key: str, labels: Mapping[str, str], *, negate: bool) -> bool:
    return (key in labels) != negate


def _in(key: str, values: set[str], labels: Mapping[str, str], *, negate: bool) -> bool:
    return (labels.get(key) in values) != negate


def selector(text: str) -> list[Callable[[Mapping[str, str]], bool]]:
    """kube-apiserver's label selector grammar, as functions of an object's labels."""
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for part in (p.strip() for p in re.split(r",(?![^()]*\))", text) if text.strip()):
        if m := re.fullmatch(r"!\s*(\S+)", part):
            key = m[1]
            tests.append(functools.partial(_has, key, negate=True))
        elif m := re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^()]*)\)", part):
            key, negate = m[1], m[2] == "notin"
            values = {v.strip() for v in m[3].split(",")}
            if not all(label_value_ok(v) for v in values):
                raise error(400, "BadRequest", f"invalid label value in selector: {part!r}")
            tests.append(functools.partial(_in, key, values, negate=negate))
        elif m := re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", part):
            key, negate, value = m[1], m[2] == "!=", m[3]
            if not label_value_ok(value):
                raise error(400, "BadRequest", f"invalid label value in selector: {part!r}")
            tests.append(functools.partial(_in, key, {value}, negate=negate))
        elif re.fullmatch(r"[^=!\s()]+", part):
            key = part
            tests.append(functools.partial(_has, key, negate=False))
        else:
            raise error(400, "BadRequest", f"unable to parse requirement: {part!r}")
        if not label_key_ok(key):
            raise error(400, "BadRequest", f"invalid label key in selector: {part!r}")
    return tests


def validate(plural: str, obj: dict[str, Any], namespace: str | None) -> None:
    """Raise the 4xx kube-apiserver answers for an object it would not store."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise error(422, "Invalid", "metadata is required")
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise error(422, "Invalid", f"metadata.name: Invalid value: {name!r}")
    if meta.get("namespace") not in (None, namespace):
        raise error(400, "BadRequest", "the namespace of the object does not match the URL")
    labels = meta.get("labels") or {}
    for key, value in labels.items():
        if not label_key_ok(key) or not label_value_ok(value):
            raise error(422, "Invalid", f"metadata.labels: Invalid value: {key}={value!r}")
    annotations = meta.get("annotations") or {}
    if not all(label_key_ok(k) and isinstance(v, str) for k, v in annotations.items()):
        raise error(422, "Invalid", "metadata.annotations: Invalid key or value")
    if sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items()) > (
        MAX_ANNOTATION_BYTES
    ):
        raise error(
            422, "Invalid", "metadata.annotations: Too long: must have at most 262144 bytes"
        )
    if plural == "configmaps":
        data = obj.get("data") or {}
        if not all(_DATA_KEY.fullmatch(k) and isinstance(v, str) for k, v in data.items()):
            raise error(422, "Invalid", "data: Invalid key or value")
        if sum(len(k) + len(v.encode()) for k, v in data.items()) > MAX_CONFIG_MAP_DATA_BYTES:
            raise error(422, "Invalid", "data: Too long: must have at most 1048576 bytes")
    elif (obj.get("spec") or {}).get("leaseDurationSeconds", 1) <= 0:
        raise error(422, "Invalid", "spec.leaseDurationSeconds: must be greater than 0")


# --- the kinds a Platform adapter uses: Pods, Nodes, PodDisruptionBudgets ---------------------

RESTART_POLICIES = ("Always", "OnFailure", "Never")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TERMINATED_PHASES = ("Succeeded", "Failed")
# The pod spec fields a pod update may change, as ValidatePodUpdate words it.
POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds`"
)


def invalid(kind: str, name: object, field: str, detail: str) -> kmock.KubernetesError:
    """kube-apiserver's 422 for one invalid field."""
    return error(422, "Invalid", f'{kind} "{name}" is invalid: {field}: {detail}')


def validate_pod(pod: dict[str, Any]) -> None:
    name = pod["metadata"].get("name")
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(containers, list) or not containers:
        raise invalid("Pod", name, "spec.containers", "Required value")
    seen: set[str] = set()
    for index, container in enumerate(containers):
        cname = container.get("name") if isinstance(container, dict) else None
        field = f"spec.containers[{index}]"
        if not isinstance(cname, str) or not _DNS_SUBDOMAIN.fullmatch(cname) or "." in cname:
            raise invalid("Pod", name, f"{field}.name", f"Invalid value: {cname!r}")
        if cname in seen:
            raise invalid("Pod", name, f"{field}.name", f"Duplicate value: {cname!r}")
        seen.add(cname)
        if not container.get("image"):
            raise invalid("Pod", name, f"{field}.image", "Required value")
    if spec.get("restartPolicy", "Always") not in RESTART_POLICIES:
        raise invalid("Pod", name, "spec.restartPolicy", "Unsupported value")
    for key, value in (spec.get("nodeSelector") or {}).items():
        if not label_key_ok(key) or not label_value_ok(value):
            raise invalid("Pod", name, "spec.nodeSelector", f"Invalid value: {key}={value!r}")
    grace_s = spec.get("terminationGracePeriodSeconds", 0)
    if not isinstance(grace_s, int) or grace_s < 0:
        raise invalid("Pod", name, "spec.terminationGracePeriodSeconds", "must be >= 0")
    for toleration in spec.get("tolerations") or []:
        _validate_toleration(name, toleration)


def _validate_toleration(name: object, toleration: dict[str, Any]) -> None:
    operator = toleration.get("operator", "Equal")
    if operator not in ("Exists", "Equal"):
        raise invalid("Pod", name, "spec.tolerations.operator", f"Unsupported value: {operator!r}")
    if operator == "Exists" and toleration.get("value"):
        raise invalid("Pod", name, "spec.tolerations.operator", "value must be empty")
    if toleration.get("effect", "") not in ("", *TAINT_EFFECTS):
        raise invalid("Pod", name, "spec.tolerations.effect", "Unsupported value")
    if toleration.get("tolerationSeconds") is not None and toleration.get("effect") != "NoExecute":
        raise invalid("Pod", name, "spec.tolerations.effect", "must be 'NoExecute'")


def pod_update_error(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> str | None:
    """Why kube-apiserver refuses this change of a pod's spec (None: it is allowed)."""
    comparable = copy.deepcopy(new_spec)
    for field in ("containers", "initContainers"):
        for new, old in zip(comparable.get(field) or [], old_spec.get(field) or [], strict=False):
            if isinstance(new, dict) and isinstance(old, dict):
                new["image"] = old.get("image")
    for field in ("activeDeadlineSeconds", "terminationGracePeriodSeconds"):
        comparable.pop(field, None)
        if field in old_spec:
            comparable[field] = old_spec[field]
    old_tolerations = old_spec.get("tolerations") or []
    if all(t in (new_spec.get("tolerations") or []) for t in old_tolerations):
        comparable.pop("tolerations", None)
        if "tolerations" in old_spec:
            comparable["tolerations"] = old_spec["tolerations"]
    return None if comparable == old_spec else POD_UPDATE_FORBIDDEN


def validate_node(node: dict[str, Any]) -> None:
    name = node["metadata"].get("name")
    spec = node.get("spec") or {}
    seen: set[tuple[str, str]] = set()
    for taint in spec.get("taints") or []:
        key, effect = taint.get("key") or "", taint.get("effect") or ""  # null is "" in Go
        if not label_key_ok(key) or not label_value_ok(taint.get("value") or ""):
            raise invalid("Node", name, "spec.taints", f"Invalid value: {key!r}")
        if effect not in TAINT_EFFECTS:
            raise invalid("Node", name, "spec.taints.effect", f"Unsupported value: {effect!r}")
        if (key, effect) in seen:
            raise invalid("Node", name, "spec.taints", f"Duplicate value: {key}:{effect}")
        seen.add((key, effect))
    if not isinstance(spec.get("unschedulable", False), bool):
        raise invalid("Node", name, "spec.unschedulable", "must be a boolean")


def validate_pdb(pdb: dict[str, Any]) -> None:
    name = pdb["metadata"].get("name")
    spec = pdb.get("spec") or {}
    if "minAvailable" in spec and "maxUnavailable" in spec:
        raise invalid(
            "PodDisruptionBudget",
            name,
            "spec",
            "minAvailable and maxUnavailable cannot be both set",
        )
    if "minAvailable" not in spec and "maxUnavailable" not in spec:
        raise invalid(
            "PodDisruptionBudget",
            name,
            "spec",
            "one of minAvailable or maxUnavailable is required by this double",
        )
    for field in ("minAvailable", "maxUnavailable"):
        value = spec.get(field, 0)
        if not (isinstance(value, int) and value >= 0) and not (
            isinstance(value, str) and re.fullmatch(r"\d+%", value)
        ):
            raise invalid("PodDisruptionBudget", name, f"spec.{field}", f"Invalid value: {value!r}")
    for key, value in ((spec.get("selector") or {}).get("matchLabels") or {}).items():
        if not label_key_ok(key) or not label_value_ok(value):
            raise invalid("PodDisruptionBudget", name, "spec.selector", f"Invalid value: {key}")


def selects(label_selector: dict[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector object (matchLabels, matchExpressions) against labels; None: nothing."""
    if label_selector is None:
        return False
    for key, value in (label_selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in label_selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def condition(obj: dict[str, Any], kind: str) -> str | None:
    """The status ("True", "False", "Unknown") of an object's condition of this type."""
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return str(found.get("status"))
    return None


def pod_healthy(pod: dict[str, Any]) -> bool:
    """What the disruption controller counts as healthy: running, Ready, not terminating."""
    return (
        (pod.get("status") or {}).get("phase") == "Running"
        and condition(pod, "Ready") == "True"
        and not pod["metadata"].get("deletionTimestamp")
    )


def _scaled(value: int | str, total: int) -> int:
    if isinstance(value, int):
        return value
    return math.ceil(int(value.rstrip("%")) * total / 100)


def pdb_status(pdb: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The status the disruption controller would write for this budget, computed now."""
    spec = pdb.get("spec") or {}
    selected = [p for p in pods if selects(spec.get("selector"), p["metadata"].get("labels") or {})]
    expected = [
        p for p in selected if (p.get("status") or {}).get("phase") not in TERMINATED_PHASES
    ]
    healthy = sum(1 for p in expected if pod_healthy(p))
    if "maxUnavailable" in spec:
        desired = max(0, len(expected) - _scaled(spec["maxUnavailable"], len(expected)))
    else:
        desired = _scaled(spec.get("minAvailable", 0), len(expected))
    allowed = max(0, healthy - desired)
    return {
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": allowed,
        "expectedPods": len(expected),
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "conditions": [
            {
                "type": "DisruptionAllowed",
                "status": "True" if allowed > 0 else "False",
                "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                "message": "",
                "lastTransitionTime": pdb["metadata"].get("creationTimestamp"),
            }
        ],
    }


def eviction_refusal(
    pod: dict[str, Any], pdbs: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> kmock.KubernetesError | None:
    """Why the eviction subresource refuses to evict this pod (None: it evicts it)."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in (*TERMINATED_PHASES, "Pending") or pod["metadata"].get("deletionTimestamp"):
        return None  # such pods are evicted without looking at budgets
    labels = pod["metadata"].get("labels") or {}
    matching = [b for b in pdbs if selects((b.get("spec") or {}).get("selector"), labels)]
    if len(matching) > 1:
        return error(
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource "
            "does not support.",
        )
    if not matching:
        return None
    budget, status = matching[0], pdb_status(matching[0], pods)
    if not pod_healthy(pod):
        policy = (budget.get("spec") or {}).get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
        enough = status["currentHealthy"] >= status["desiredHealthy"] > 0
        if policy == "AlwaysAllow" or enough:
            return None
    if status["disruptionsAllowed"] > 0:
        return None
    refusal = error(
        429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget."
    )
    cause = (
        f"The disruption budget {budget['metadata']['name']} needs "
        f"{status['desiredHealthy']} healthy pods and has {status['currentHealthy']} currently"
    )
    return kmock.KubernetesError(
        status=429,
        reason=refusal.reason,
        message=refusal.message,
        details={"causes": [{"reason": "DisruptionBudget", "message": cause}]},
    )


# --- patches: JSON merge (RFC 7386), strategic merge, JSON patch (RFC 6902) --------------------

# The lists that strategic merge merges by a key (patchStrategy "merge" in the Go types); every
# other list is replaced whole (e.g. a Node's spec.taints, a Pod's status.containerStatuses).
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "containers", "env"): "name",
    ("spec", "containers", "ports"): "containerPort",
    ("spec", "volumes"): "name",
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
}


def merge_patch(
    old: Any,
    patch: Any,
    keys: Mapping[tuple[str, ...], str] | None = None,
    path: tuple[str, ...] = (),
) -> Any:
    """RFC 7386 (``keys`` None) or strategic merge (``keys``: the lists merged by a key).

    Strategic merge directives (``$patch``, ``$retainKeys``, ``$setElementOrder``) are not
    modelled, except ``$patch: delete`` on an item of a merged list; they are dropped.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(old) if isinstance(old, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = (*path, key)
        if isinstance(value, list) and keys and sub in keys and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, keys, sub)
        else:
            result[key] = merge_patch(result.get(key), value, keys, sub)
    return result


def _merge_list(
    old: list[Any], patch: list[Any], keys: Mapping[tuple[str, ...], str], path: tuple[str, ...]
) -> list[Any]:
    key = keys[path]
    merged = [copy.deepcopy(item) for item in old]
    for item in patch:
        if not isinstance(item, dict):
            raise error(400, "BadRequest", f"{'.'.join(path)}: items must be objects")
        found = next((i for i, o in enumerate(merged) if o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if found is not None:
                del merged[found]
        elif found is None:
            merged.append(merge_patch({}, item, keys, path))
        else:
            merged[found] = merge_patch(merged[found], item, keys, path)
    return merged


def json_patch(old: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902 with the operations add, remove, replace and test (move and copy: 422)."""
    if not isinstance(operations, list):
        raise error(
            400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    doc = copy.deepcopy(old)
    for operation in operations:
        op, pointer = operation.get("op"), str(operation.get("path", ""))
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        if not parts:
            raise error(422, "Invalid", f"the JSON patch path {pointer!r} is not modelled")
        parent: Any = doc
        for part in parts[:-1]:
            parent = _step(parent, part, pointer)
        last = parts[-1]
        if op == "test":
            if _step(parent, last, pointer) != operation.get("value"):
                raise error(422, "Invalid", f"testing value {pointer} failed")
        elif op in ("add", "replace"):
            if op == "replace":
                _step(parent, last, pointer)
            _put(parent, last, copy.deepcopy(operation.get("value")), insert=op == "add")
        elif op == "remove":
            _step(parent, last, pointer)
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise error(422, "Invalid", f"the JSON patch operation {op!r} is not modelled")
    return doc


def _step(node: Any, part: str, pointer: str) -> Any:
    try:
        return node[int(part)] if isinstance(node, list) else node[part]
    except (KeyError, IndexError, ValueError, TypeError):
        raise error(422, "Invalid", f"the path {pointer!r} does not exist") from None


def _put(node: Any, part: str, value: Any, *, insert: bool) -> None:
    if isinstance(node, list):
        index = len(node) if part == "-" else int(part)
        if insert:
            node.insert(index, value)
        else:
            node[index] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise error(422, "Invalid", f"cannot add {part!r} to a scalar")
