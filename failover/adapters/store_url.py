"""Open a coordination store from its URL: ``memory://``, ``sqlite://``, ``etcd://``, ``kubernetes://``.

URL forms:

- ``memory://`` - an in-process :class:`MemoryStore`. Every call to :func:`open_store` with
  it returns a new, empty store; two opens in one process do not share data.
- ``sqlite://`` followed by a filesystem path: ``sqlite:///var/lib/bfm/bfm.db`` (three
  slashes, the third starting the absolute path ``/var/lib/bfm/bfm.db``) or
  ``sqlite://run/bfm.db`` (a path relative to the current directory, made absolute when
  opened; the store's ``url`` always shows the absolute form). The text after ``sqlite://``
  is the path verbatim: no percent-decoding and no ``?options``. Note that this is not
  SQLAlchemy's rule, where three slashes mean a relative path.
- ``etcd://host:port,host:port,...`` - an :class:`EtcdStore` on the etcd cluster whose
  client endpoints are listed (plain HTTP; every member is used, so list them all). An
  IPv6 host goes in brackets (``[::1]:2379``). An optional path is a key prefix that
  namespaces every key: ``etcd://127.0.0.1:2379/bfm/run-1/`` (a trailing ``/`` is added
  when missing). Opening checks that at least one member answers.
- ``kubernetes://namespace[?context=NAME][&instance=NAME]`` - a :class:`KubernetesStore`
  on Leases and ConfigMaps in that namespace (``docs/kubernetes.md``). The API server and
  credentials come from the in-cluster service account when ``KUBERNETES_SERVICE_HOST`` is
  set (BFM running in a pod), else from the kubeconfig (``$KUBECONFIG``, else
  ``~/.kube/config``) and its current context, or the context ``?context=`` names (which
  always uses the kubeconfig). ``?instance=`` lets several stores share a namespace
  (default ``bfm``). Opening checks that the API answers.

A malformed URL raises :class:`StoreUrlError` (a usage error); a well-formed URL whose
store cannot be reached raises :class:`failover.ports.StoreUnavailable`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from failover.adapters import kubernetes_objects as kube
from failover.adapters.etcd_store import CONNECT_TIMEOUT_S, EtcdStore
from failover.adapters.memory_store import MemoryStore
from failover.adapters.sqlite_store import SqliteStore
from failover.adapters.tls import TlsConfigError, etcd_tls_from_env
from failover.ports import CoordinationStore

if TYPE_CHECKING:
    from kubernetes.client import Configuration

ACCEPTED_FORMS = (
    "memory://, sqlite:///absolute/path/bfm.db, sqlite://relative/path/bfm.db, "
    "etcd://host:port,host:port,host:port or kubernetes://namespace"
)

_KUBERNETES_OPTIONS = ("context", "instance")
DEFAULT_KUBECONFIG = "~/.kube/config"


class StoreUrlError(ValueError):
    """The store URL is malformed or unknown, or the Kubernetes API it needs is not configured."""


def open_store(url: str, *, request_timeout_s: float | None = None) -> CoordinationStore:
    """The store ``url`` names, opened and ready; see the module docstring for the forms.

    ``request_timeout_s``: how long one call may wait for a networked store's answer
    (etcd, Kubernetes; connecting gets at most half of it), for callers that must learn sooner than
    the backend's default, such as a site agent renewing a lease within its deadline."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise StoreUrlError(f"bfm: {url!r} is not a store URL; use {ACCEPTED_FORMS}")
    if scheme == "memory":
        if rest:
            raise StoreUrlError(
                f"bfm: the memory store URL takes no path, got {url!r}; use memory://"
            )
        return MemoryStore()
    if scheme == "sqlite":
        if not rest:
            raise StoreUrlError(
                f"bfm: the store URL {url!r} has no file path; use {ACCEPTED_FORMS}"
            )
        if rest == ":memory:":
            raise StoreUrlError(
                f"bfm: {url!r} would not be shared between processes; use memory:// instead"
            )
        return SqliteStore(rest)
    if scheme == "etcd":
        return _open_etcd(url, rest, request_timeout_s)
    if scheme == "kubernetes":
        return _open_kubernetes(url, rest, request_timeout_s)
    raise StoreUrlError(f"bfm: unknown store URL {url!r}; use {ACCEPTED_FORMS}")


def _open_etcd(url: str, rest: str, request_timeout_s: float | None) -> CoordinationStore:
    hosts, slash, path = rest.partition("/")
    if "?" in rest or "#" in rest:
        raise StoreUrlError(
            f"bfm: the etcd store URL {url!r} takes no ?options or #fragment; "
            "use etcd://host:port,host:port[/key/prefix/]"
        )
    if not hosts:
        raise StoreUrlError(
            f"bfm: the etcd store URL {url!r} names no member; "
            "use etcd://host:port,host:port,host:port"
        )
    endpoints = [_parse_endpoint(url, item) for item in hosts.split(",")]
    seen = {f"{h}:{p}" for h, p in endpoints}
    if len(seen) != len(endpoints):
        raise StoreUrlError(f"bfm: the etcd store URL {url!r} names a member twice")
    prefix = path if not path or path.endswith("/") else path + "/"
    if slash and path.startswith("/"):
        raise StoreUrlError(
            f"bfm: the key prefix in the etcd store URL {url!r} must not start with '/'"
        )
    try:
        tls = etcd_tls_from_env(os.environ)  # BFM_ETCD_CA, _CERT, _KEY: HTTPS to the members
    except TlsConfigError as err:
        raise StoreUrlError(f"bfm: the etcd store {url!r}: {err}") from None
    if request_timeout_s is None:
        return EtcdStore(endpoints, prefix=prefix, tls=tls)
    return EtcdStore(
        endpoints,
        prefix=prefix,
        request_timeout_s=request_timeout_s,
        connect_timeout_s=min(CONNECT_TIMEOUT_S, request_timeout_s / 2),
        tls=tls,
    )


def _parse_endpoint(url: str, item: str) -> tuple[str, int]:
    usage = "each member is host:port, e.g. etcd://127.0.0.1:2379,127.0.0.1:22379"
    if not item:
        raise StoreUrlError(f"bfm: the etcd store URL {url!r} has an empty member; {usage}")
    if item.startswith("["):
        host, bracket, port_text = item[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise StoreUrlError(f"bfm: bad etcd member {item!r} in {url!r}; {usage}")
        port_text = port_text[1:]
    else:
        host, colon, port_text = item.rpartition(":")
        if not colon:
            raise StoreUrlError(f"bfm: the etcd member {item!r} in {url!r} has no port; {usage}")
    if not host or any(c.isspace() or c in "@/" for c in host):
        raise StoreUrlError(f"bfm: bad etcd member host in {item!r} of {url!r}; {usage}")
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise StoreUrlError(
            f"bfm: the etcd member {item!r} in {url!r} has no valid port (1-65535); {usage}"
        )
    return host, int(port_text)


def _open_kubernetes(url: str, rest: str, request_timeout_s: float | None) -> CoordinationStore:
    usage = "use kubernetes://namespace[?context=NAME][&instance=NAME]"
    namespace, _, query = rest.partition("?")
    if "#" in rest or "/" in namespace:
        raise StoreUrlError(f"bfm: the Kubernetes store URL {url!r} takes no path; {usage}")
    if not namespace:
        raise StoreUrlError(f"bfm: the Kubernetes store URL {url!r} names no namespace; {usage}")
    problem = kube.namespace_problem(namespace)
    if problem:
        raise StoreUrlError(f"bfm: bad namespace {namespace!r} in {url!r}: {problem}")
    options = kubernetes_options(url, query, usage)
    instance = options.get("instance", kube.DEFAULT_INSTANCE)
    problem = kube.instance_problem(instance)
    if problem:
        raise StoreUrlError(f"bfm: bad instance {instance!r} in {url!r}: {problem}")
    context = options.get("context")
    configuration = kubernetes_configuration(url, context=context, environ=os.environ)
    # Imported here: the client takes half a second to import, which only this backend pays.
    from failover.adapters import kubernetes_store  # noqa: PLC0415

    request_s = request_timeout_s or kubernetes_store.REQUEST_TIMEOUT_S
    return kubernetes_store.KubernetesStore(
        configuration,
        namespace=namespace,
        instance=instance,
        context=context,
        request_timeout_s=request_s,
        connect_timeout_s=min(kubernetes_store.CONNECT_TIMEOUT_S, request_s / 2),
    )


def kubernetes_options(
    url: str, query: str, usage: str, allowed: tuple[str, ...] = _KUBERNETES_OPTIONS
) -> dict[str, str]:
    """The ``?name=value`` options of a ``kubernetes://`` URL, each one of ``allowed``, at
    most once and not empty; StoreUrlError naming the fault and ``usage``."""
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StoreUrlError(f"bfm: cannot read the options of {url!r}; {usage}") from None
    for name, value in pairs:
        if name not in allowed:
            raise StoreUrlError(f"bfm: unknown option {name!r} in {url!r}; {usage}")
        if name in options:
            raise StoreUrlError(f"bfm: the option {name!r} is given twice in {url!r}")
        if not value:
            raise StoreUrlError(f"bfm: the option {name!r} in {url!r} is empty; {usage}")
        options[name] = value
    return options


def kubernetes_configuration(
    url: str, *, context: str | None, environ: Mapping[str, str]
) -> Configuration:
    """The API server and credentials for ``url``: in-cluster first (unless a kubeconfig
    ``context`` is named), else the kubeconfig; a StoreUrlError naming both when neither
    can be used. No global client state is touched and the kubeconfig is never rewritten."""
    import yaml  # noqa: PLC0415  (the kubeconfig's format; only this backend reads it)
    from kubernetes import client, config  # noqa: PLC0415  (see _open_kubernetes)

    configuration = client.Configuration()
    if context is not None:
        in_cluster = "not tried: ?context= names a kubeconfig context"
    elif not environ.get("KUBERNETES_SERVICE_HOST"):
        in_cluster = "not running in a pod: KUBERNETES_SERVICE_HOST is not set"
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException as exc:
            in_cluster = f"the pod's service account cannot be used: {exc}"
        else:
            return configuration
    where = environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    origin = "$KUBECONFIG" if environ.get("KUBECONFIG") else "the default path"
    files = [os.path.expanduser(path) for path in where.split(os.pathsep) if path]
    if not any(os.path.isfile(path) for path in files):
        raise StoreUrlError(
            f"bfm: no Kubernetes API to use for {url!r}: in-cluster config ({in_cluster}) "
            f"and no kubeconfig file at {where} ({origin}); run bfm in a pod with a service "
            "account, or set KUBECONFIG to a kubeconfig file"
        )
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=where,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (config.ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        raise StoreUrlError(
            f"bfm: the kubeconfig {where} cannot be used for {url!r} ({exc}); "
            "check it with kubectl config view"
            + (f" and that it has the context {context!r}" if context else "")
        ) from None
    return configuration
