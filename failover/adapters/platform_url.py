"""Open the Kubernetes platform from its URL: ``kubernetes://NAMESPACE[?OPTIONS]``.

``bfm site run --platform URL`` runs the site's components as pods
(:class:`failover.adapters.kubernetes_platform.KubernetesPlatform`, ``docs/kubernetes.md``)
instead of local processes. Options, each at most once:

- ``context=NAME``: a kubeconfig context (the API server and credentials are found as for
  the ``kubernetes://`` store: in-cluster first, else the kubeconfig);
- ``image=REPOSITORY``: the component image, tagged with the version (default
  ``ghcr.io/hemisphere/bfm``); ``image=REPOSITORY:TAG`` or ``REPOSITORY@DIGEST`` runs that
  one image at every version (the chart: BFM's own image holds the reference components);
- ``name=NAME``: the platform's label value, so that several BFM installations can share
  a namespace (default ``bfm``);
- ``template=PATH``: a pod template file whose fields are added to every component pod
  (security context, resources, volumes, the grants URL: ``kubernetes_pod_overlay``).

A malformed URL, or no Kubernetes API configured, raises
:class:`failover.adapters.store_url.StoreUrlError` naming the problem and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from failover.adapters import kubernetes_objects as kube
from failover.adapters.store_url import (
    StoreUrlError,
    kubernetes_configuration,
    kubernetes_options,
)
from failover.core.topology import Topology
from failover.ports import Clock

if TYPE_CHECKING:
    from failover.adapters.kubernetes_platform import KubernetesPlatform

USAGE = (
    "use kubernetes://NAMESPACE[?context=NAME][&image=REPOSITORY[:TAG]][&name=NAME][&template=PATH]"
)
_OPTIONS = ("context", "image", "name", "template")


def parse_platform_url(url: str) -> tuple[str, dict[str, str]]:
    """The namespace and options of a platform URL; StoreUrlError when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "kubernetes":
        raise StoreUrlError(f"bfm: unknown platform {url!r}; {USAGE} (or leave it out: local)")
    namespace, _, query = rest.partition("?")
    if not namespace or "/" in namespace or "#" in rest:
        raise StoreUrlError(f"bfm: the platform URL {url!r} must name one namespace; {USAGE}")
    problem = kube.namespace_problem(namespace)
    if problem:
        raise StoreUrlError(f"bfm: bad namespace {namespace!r} in {url!r}: {problem}")
    options = kubernetes_options(url, query, USAGE, _OPTIONS)
    if "name" in options and (problem := kube.instance_problem(options["name"])):
        raise StoreUrlError(f"bfm: bad name {options['name']!r} in {url!r}: {problem}")
    return namespace, options


def check_platform_url(url: str) -> None:
    """StoreUrlError when ``url`` is malformed or its pod template file is unusable."""
    _, options = parse_platform_url(url)
    _overlay(url, options.get("template"))


def _overlay(url: str, path: str | None) -> dict[str, Any]:
    """The checked pod template file ``template=`` names ({} without one): every clash with
    what the platform sets is found now, before any pod is made."""
    if not path:
        return {}
    from failover.adapters import kubernetes_pods as pods  # noqa: PLC0415 (slow client import)
    from failover.adapters.kubernetes_pod_overlay import load_overlay  # noqa: PLC0415

    try:
        overlay = load_overlay(Path(path))
        pods.PodTemplate(overlay=overlay).body("bfm-a-x-000000", "a", "x", "0", serving=True)
    except ValueError as err:
        raise StoreUrlError(f"bfm: template= of {url!r}: {err}") from None
    return overlay


def open_platform(
    url: str,
    topology: Topology,
    *,
    sites: Collection[str],
    clock: Clock,
    extra_args: tuple[str, ...] = (),
    versions: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> KubernetesPlatform:
    """The Kubernetes platform ``url`` names, running the components of ``sites`` (none
    for a witness: it only isolates nodes), its pods given ``extra_args``."""
    namespace, options = parse_platform_url(url)
    configuration = kubernetes_configuration(
        url, context=options.get("context"), environ=os.environ if environ is None else environ
    )
    from failover.adapters import kubernetes_pods as pods  # noqa: PLC0415 (slow client import)
    from failover.adapters.kubernetes_platform import KubernetesPlatform  # noqa: PLC0415

    template = pods.PodTemplate(
        platform=options.get("name", "bfm"),
        image=options.get("image", pods.DEFAULT_IMAGE),
        extra_args=extra_args,
        overlay=_overlay(url, options.get("template")),
    )
    return KubernetesPlatform(
        configuration,
        topology,
        namespace=namespace,
        sites=sites,
        template=template,
        versions=versions,
        clock=clock,
    )
