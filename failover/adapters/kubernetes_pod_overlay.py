"""What an installation adds to the platform's component pods: the pod template file.

The platform writes each component pod itself (:class:`failover.adapters.kubernetes_pods.
PodTemplate`): labels, zone, restart policy, the one container's image, command and
arguments. What only the installation knows (the Helm chart renders it from its values:
security context, resources, volumes for a read-only root file system, the service account,
pull secrets, the grants URL) comes from a file named by the platform URL's ``template=``
option, shaped like a Pod:

```yaml
metadata: {labels: {...}, annotations: {...}}
spec:
  securityContext: {...}
  volumes: [...]
  containers:
    - resources: {...}          # merged into the component's container
      volumeMounts: [...]
      env: [{name: BFM_GRANTS_URL, value: http://bfm-site-a:9465/grants}]
```

Merging adds, never replaces: mappings are merged key by key, lists of mappings are
appended to (an item whose ``name`` the pod already has is refused), and a value the
platform sets itself (``spec.restartPolicy``, the container's ``image`` or ``args``, a
``bfm.hemisphere.io`` label) may not be set again. ``spec.containers`` is one container,
without a name: it is the component's. Every problem is a ``ValueError`` naming the
file's path and the field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_TOP_LEVEL = ("metadata", "spec")
_METADATA = ("labels", "annotations")


def load_overlay(path: Path) -> dict[str, Any]:
    """The pod template file at ``path`` (YAML or JSON), checked for its shape."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read the pod template {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"the pod template {path} is not YAML or JSON ({err})") from None
    if data is None:
        return {}
    try:
        return checked_overlay(data)
    except ValueError as err:
        raise ValueError(f"the pod template {path}: {err}") from None


def checked_overlay(data: Any) -> dict[str, Any]:
    """``data`` when it is shaped like a pod template overlay (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise ValueError("must be a mapping with metadata and/or spec, like a Pod")
    unknown = sorted(set(data) - set(_TOP_LEVEL))
    if unknown:
        raise ValueError(f"unknown top-level field(s) {unknown}: only metadata and spec")
    metadata = {} if data.get("metadata") is None else data["metadata"]
    if not isinstance(metadata, Mapping) or set(metadata) - set(_METADATA):
        raise ValueError("metadata may hold only labels and annotations")
    for key in _METADATA:
        values = metadata.get(key) or {}
        if not isinstance(values, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise ValueError(f"metadata.{key} must map strings to strings (quote numbers)")
    spec = {} if data.get("spec") is None else data["spec"]
    if not isinstance(spec, Mapping):
        raise ValueError("spec must be a mapping (the Pod spec's fields)")
    containers = spec.get("containers")
    if containers is not None and not (
        isinstance(containers, list) and len(containers) == 1 and isinstance(containers[0], Mapping)
    ):
        raise ValueError("spec.containers must be one container: the component's (no name)")
    if containers and "name" in containers[0]:
        raise ValueError("spec.containers[0] has a name: the platform names the container")
    plain: dict[str, Any] = json.loads(json.dumps(data))  # plain dicts and lists, unshared
    return plain


def apply_overlay(pod: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``pod`` with ``overlay`` added (see the module docstring); ValueError on a clash."""
    result = copy.deepcopy(dict(pod))
    overlay = dict(overlay)
    spec_overlay = dict(overlay.get("spec") or {})
    container_overlay = (spec_overlay.pop("containers", None) or [{}])[0]
    _merge(result, {"metadata": overlay.get("metadata") or {}, "spec": spec_overlay}, "")
    container = result["spec"]["containers"][0]
    _merge(container, container_overlay, "spec.containers[0].")
    return result


def _named_items(value: Any) -> bool:
    """A list of mappings (volumes, env, mounts): appended to; a list of strings (args,
    command) is one value, never extended."""
    return isinstance(value, list) and all(isinstance(i, Mapping) for i in value)


def _merge(into: dict[str, Any], extra: Mapping[str, Any], path: str) -> None:
    for key, value in extra.items():
        where = f"{path}{key}"
        if key not in into:
            into[key] = copy.deepcopy(value)
        elif isinstance(into[key], dict) and isinstance(value, Mapping):
            _merge(into[key], value, f"{where}.")
        elif _named_items(into[key]) and _named_items(value):
            names = {i.get("name") for i in into[key] if isinstance(i, Mapping)} - {None}
            clash = sorted(
                str(i["name"]) for i in value if isinstance(i, Mapping) and i.get("name") in names
            )
            if clash:
                raise ValueError(f"{where} already has {clash}: the platform sets them itself")
            into[key].extend(copy.deepcopy(value))
        elif into[key] != value:
            raise ValueError(
                f"{where} is set by the platform itself ({into[key]!r}); leave it out of the "
                "pod template"
            )
