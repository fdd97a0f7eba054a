"""`bfm status`: sites, leader, who owns what, the operator's choices and the latest events.

Also the helpers every command that talks to a running system shares: finding the store
(``--store``, ``--run-dir``, ``$BFM_STORE``), opening it with clear errors, and telling a
running system from an empty store.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from failover.cli.errors import Unreachable, UsageError

if TYPE_CHECKING:
    from rich.console import Group

    from failover.core.topology import Topology
    from failover.ports import CoordinationStore

STORE_ENV = "BFM_STORE"
STORE_HELP = (
    "Coordination store URL (default: $BFM_STORE): sqlite:///path/bfm.db, "
    "etcd://host:port,host:port,host:port or kubernetes://namespace[?context=NAME]."
)
RUN_DIR_HELP = "A run directory (bfm demo's): its endpoints.json names the store."
STATUS_EVENTS = 5  # events shown by `bfm status`

StoreOption = Annotated[str | None, typer.Option("--store", help=STORE_HELP)]
RunDirOption = Annotated[Path | None, typer.Option("--run-dir", help=RUN_DIR_HELP)]


def store_url(store: str | None, run_dir: Path | None) -> str:
    """The store to use: ``--store``, else the run directory's, else ``$BFM_STORE``."""
    if store:
        return store
    if run_dir is not None:
        from failover.workload.endpoints import Endpoints

        try:
            return Endpoints.load(run_dir).store
        except ValueError as err:
            raise UsageError(str(err)) from None
    from_env = os.environ.get(STORE_ENV, "").strip()
    if from_env:
        return from_env
    raise UsageError(f"no store given: pass --store URL or --run-dir DIR, or set {STORE_ENV}")


def open_existing_store(url: str | None) -> Any:
    """The store named by ``url``; a clear error if none is named, found or reachable."""
    from failover.adapters.store_url import StoreUrlError, open_store
    from failover.ports import StoreUnavailable

    if not url:
        raise UsageError(f"no store given: pass --store URL or set {STORE_ENV}")
    if url.startswith("sqlite://"):
        path = Path(url.removeprefix("sqlite://"))
        if not path.exists():
            raise Unreachable(
                f"no BFM store at {path} (the file does not exist); is the system running?"
            )
    try:
        return open_store(url)
    except StoreUrlError as err:
        raise UsageError(str(err).removeprefix("bfm: ")) from None
    except StoreUnavailable as err:
        raise Unreachable(f"cannot reach the store {url} ({err}); is it running?") from None


def topology_from(store: CoordinationStore) -> Topology:
    """The running system's topology: the default sites and components, and its shard count."""
    from failover.core.topology import DEFAULT_SHARDS_PER_COMPONENT, default_topology
    from failover.runtime.documents import OWNERSHIP_PREFIX

    shards = DEFAULT_SHARDS_PER_COMPONENT
    for item in store.list(OWNERSHIP_PREFIX):
        raw = item.value.get("shards")
        if isinstance(raw, list) and raw:
            shards = len(raw)
            break
    return default_topology(shards_per_component=shards)


def read_status(store: Any, *, now_wall_s: float, events: int = STATUS_EVENTS) -> dict[str, Any]:
    """Everything `bfm status` shows, as plain data (also its --json output)."""
    from failover.core.agent import LeaseRecord
    from failover.core.fencing import Ownership
    from failover.runtime.documents import LEADER_KEY, OWNERSHIP_PREFIX, LeaderRecord

    result: dict[str, Any] = {"store": store.url, "leader": None, "sites": {}, "ownership": {}}
    leader = store.get(LEADER_KEY)
    if leader is not None:
        try:
            record = LeaderRecord.from_doc(leader.value)
            result["leader"] = {"site": record.holder, "term": record.term}
        except ValueError as err:
            result["leader"] = {"damaged": str(err)}
    for item in store.list("sites/"):
        site = item.key.split("/")[1]
        try:
            lease = LeaseRecord.from_doc(item.value)
        except ValueError as err:
            result["sites"][site] = {"damaged": str(err)}
            continue
        result["sites"][site] = {
            "session": lease.session,
            "renewed_s_ago": round(max(0.0, now_wall_s - lease.renewed_at_wall_s), 1),
            "components_up": list(lease.components_up),
            "store_ok": lease.store_ok,
        }
    for item in store.list(OWNERSHIP_PREFIX):
        component = item.key.removeprefix(OWNERSHIP_PREFIX)
        try:
            ownership = Ownership.from_doc(item.value)
        except ValueError as err:
            result["ownership"][component] = {"damaged": str(err)}
            continue
        counts: dict[str, int] = {}
        for a in ownership.shards:
            key = a.owner or "-"
            counts[key] = counts.get(key, 0) + 1
        result["ownership"][component] = {
            "shards_per_site": counts,
            "max_epoch": ownership.max_epoch,
            "draining": sum(1 for a in ownership.shards if a.draining),
        }
    result["admin"] = read_admin(store)
    result["instances"] = {
        item.key.split("/")[1]: dict(item.value)
        for item in store.list("platform/")
        if item.key.endswith("/instances")
    }
    result["events"] = read_event_docs(store, limit=events)
    result["update"] = read_update_summary(store)
    result["license"] = read_license_summary(store)
    return result


def read_license_summary(store: Any) -> dict[str, Any] | None:
    """The leader's license verdict in one mapping (None: licensing not configured)."""
    from failover.runtime.license_docs import read_status as read_license

    try:
        found = read_license(store)
    except ValueError as err:
        return {"damaged": str(err)}
    if found is None:
        return None
    return {**found.summary(), "grace_remaining_s": found.grace_remaining_s}


def license_line(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "license: not configured"
    if "damaged" in summary:
        return f"license: status damaged ({summary['damaged']})"
    dongles = ", ".join(f"{s} {v}" for s, v in summary["dongles"].items())
    line = f"license: {summary['state']}"
    if summary["licensed_by"]:
        line += f" by {', '.join(summary['licensed_by'])}"
    if summary["state"] != "licensed":
        line += f", grace left {summary['grace_remaining_s'] / 3600:.1f} h"
    return f"{line} (dongles: {dongles}; details: bfm license)"


def read_update_summary(store: Any) -> dict[str, Any] | None:
    """The rolling update in one mapping (None: none was ever started)."""
    from failover.core.update_state import StateError
    from failover.runtime.update_admin import read_update

    try:
        state, _ = read_update(store)
    except StateError as err:
        return {"damaged": str(err)}
    if state is None:
        return None
    index = min(state.index, len(state.steps) - 1)
    return {
        "release": state.release,
        "outcome": state.outcome.value,
        "mode": state.mode.value,
        "step": index + 1,
        "steps": len(state.steps),
        "current": state.steps[index].summary if state.steps else "",
        "note": state.notes[index] if state.steps else "",
        "reason": state.reason,
    }


def update_line(update: dict[str, Any] | None) -> str:
    if update is None:
        return "update: none started"
    if "damaged" in update:
        return f"update: state damaged: {update['damaged']} (bfm update abort --force)"
    line = f"update: release {update['release']} {update['outcome']} ({update['mode']})"
    if update["outcome"] == "running":
        line += f", step {update['step']} of {update['steps']}: {update['current']}"
        if update["note"]:
            line += f" ({update['note']})"
    elif update["reason"]:
        line += f": {update['reason']}"
    return line


def instances_line(data: dict[str, Any]) -> str:
    """Restarted and given-up component instances per site, from the supervisors."""
    restarted, given_up = [], []
    for site, instances in sorted(data.get("instances", {}).items()):
        for component, info in sorted(instances.items()):
            if not isinstance(info, dict):
                continue
            if info.get("given_up"):
                given_up.append(f"{site}/{component}")
            elif info.get("restarts"):
                restarted.append(f"{site}/{component} x{info['restarts']}")
    line = f"restarts: {', '.join(restarted) or 'none'}"
    if given_up:
        line += (
            f"; [red]CRASH-LOOPING, not restarted any more: {', '.join(given_up)}[/red] "
            "(its shards stay at the other site; start it again once fixed)"
        )
    return line


def read_admin(store: Any) -> dict[str, Any]:
    """The operator's choices as plain data; ``{"damaged": why}`` when unreadable."""
    from failover.runtime.admin import read_policy

    try:
        return read_policy(store).to_doc()
    except ValueError as err:
        return {"damaged": str(err)}


def read_event_docs(
    store: Any, *, since_wall_s: float | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The recorded events as plain data, oldest first, each with its sequence."""
    from failover.runtime.events import read_events

    history = read_events(store, since_wall_s=since_wall_s, limit=limit)
    docs = [{"sequence": sequence, **event.to_doc()} for sequence, event in history.events]
    docs += [{"damaged": why} for why in history.damaged]
    return docs


def status(
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show the sites, the leader, who owns which shards, drains, canaries, pins and the
    latest events.

    Exit 3 when no system is found in the store or the store cannot be reached.
    """
    coordination = open_existing_store(store_url(store, run_dir))
    try:
        data = read_status(coordination, now_wall_s=time.time())
    finally:
        coordination.close()
    if not data["sites"] and not data["ownership"] and data["leader"] is None:
        raise Unreachable(f"no BFM system found in the store {data['store']}; is it running?")
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    console().print(render(data))


def render(data: dict[str, Any]) -> Group:
    """`bfm status`'s view of ``read_status`` data (also what `bfm watch` refreshes)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    leader = data["leader"] or {}
    head = f"store {data['store']}  leader: {leader.get('site', 'none')}"
    if "term" in leader:
        head += f" (term {leader['term']})"
    sites = Table(title="sites")
    for column in ("site", "session", "renewed", "components up", "store"):
        sites.add_column(column)
    for site, info in sorted(data["sites"].items()):
        if "damaged" in info:
            sites.add_row(site, "[red]damaged[/red]", "", info["damaged"], "")
            continue
        stale = info["renewed_s_ago"] > 2.0
        renewed = f"{info['renewed_s_ago']} s ago"
        sites.add_row(
            site,
            str(info["session"]),
            f"[red]{renewed}[/red]" if stale else renewed,
            ", ".join(info["components_up"]) or "[red]none[/red]",
            "ok" if info["store_ok"] else "[red]unreachable[/red]",
        )
    owners = Table(title="shards per site")
    all_sites = sorted(
        {s for o in data["ownership"].values() for s in o.get("shards_per_site", {})}
    )
    pins = data.get("admin", {}).get("pinned", {})
    for column in ("component", *all_sites, "max epoch", "draining", "pinned to"):
        owners.add_column(column)
    for component, info in sorted(data["ownership"].items()):
        if "damaged" in info:
            owners.add_row(component, f"[red]damaged: {info['damaged']}[/red]")
            continue
        counts = info["shards_per_site"]
        owners.add_row(
            component,
            *(str(counts.get(s, 0)) for s in all_sites),
            str(info["max_epoch"]),
            str(info["draining"]),
            pins.get(component, ""),
        )
    parts: list[Any] = [
        Text(head),
        sites,
        owners,
        Text(admin_line(data.get("admin", {}))),
        Text.from_markup(instances_line(data)),
    ]
    if data.get("update") is not None:
        parts.append(Text(update_line(data["update"])))  # plain: summaries hold [rollback]
    if "license" in data:
        parts.append(Text(license_line(data["license"])))
    if data.get("events"):
        parts.append(events_table(data["events"], title="latest events"))
    return Group(*parts)


def admin_line(admin: dict[str, Any]) -> str:
    if "damaged" in admin:
        return (
            f"operator: admin/policy is DAMAGED ({admin['damaged']}); the controller keeps "
            "the last good one until the next bfm drain/undrain/switchover/rebalance"
        )
    drained = ", ".join(admin.get("drained_sites", [])) or "none"
    pins = ", ".join(f"{c} -> {s}" for c, s in sorted(admin.get("pinned", {}).items())) or "none"
    line = f"operator: drained sites: {drained}; pinned: {pins}"
    canary = admin.get("canary", {})
    if canary:
        limits = ", ".join(f"{s} at most {n}" for s, n in sorted(canary.items()))
        line += f"; canary (shards per component): {limits}"
    if admin.get("changed_by"):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(admin["changed_at_wall_s"]))
        line += f" (last change by {admin['changed_by']} at {when}Z"
        line += f": {admin['reason']})" if admin.get("reason") else ")"
    return line


def events_table(events: list[dict[str, Any]], *, title: str = "events") -> Any:
    """A table of event documents (``read_event_docs``), oldest first."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("#", "time (UTC)", "kind", "component", "moves", "epoch", "by", "reason"):
        table.add_column(column)
    for e in events:
        if "damaged" in e:
            table.add_row("", "", "[red]damaged[/red]", "", "", "", "", e["damaged"])
            continue
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at_wall_s"]))
        by = e["leader"] + (f" (term {e['term']})" if e["term"] else "")
        epoch = f"{e['epoch_before']} -> {e['epoch_after']}" if e["component"] else ""
        table.add_row(
            str(e["sequence"]), stamp, e["kind"], e["component"], _moves(e), epoch, by, e["reason"]
        )
    return table


def _moves(event: dict[str, Any]) -> str:
    """``a->b x2`` for the moved shards, else the shard list (drains move nothing yet)."""
    pairs: dict[str, int] = {}
    for _, src, dst in event["moves"]:
        key = f"{src or 'none'}->{dst or 'none'}"
        pairs[key] = pairs.get(key, 0) + 1
    if pairs:
        return ", ".join(f"{k} x{n}" for k, n in sorted(pairs.items()))
    shards = event["shards"]
    return f"shards {', '.join(map(str, shards))}" if shards else ""


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def console() -> Any:
    """A rich console; piped or captured, wide enough that tables keep one row per line."""
    from rich.console import Console

    shown = Console()
    return shown if shown.is_terminal else Console(width=160)
