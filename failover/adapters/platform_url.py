"""Open the Kubernetes platform from its URL: ``kubernetes://NAMESPACE[?OPTIONS]``.

``bfm site run --platform URL`` runs the site's components as pods
(:class:`failover.adapters.kubernetes_platform.KubernetesPlatform`, ``docs/kubernetes.md``)
instead of local processes. Options, each at most once:

- ``context=NAME``: a kubeconfig context (the API server and credentials are found as for
  the ``kubernetes://`` store: in-cluster first, else the kubeconfig);
- ``image=REPOSITORY``: the component image, tagged with the version (default
  ``ghcr.io/hemisphere/bfm``);
- ``name=NAME``: the platform's label value, so that several BFM installations can share
  a namespace (default ``bfm``).

A malformed URL, or no Kubernetes API configured, raises
:class:`failover.adapters.store_url.StoreUrlError` naming the problem and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

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

USAGE = "use kubernetes://NAMESPACE[?context=NAME][&image=REPOSITORY][&name=NAME]"
_OPTIONS = ("context", "image", "name")


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
