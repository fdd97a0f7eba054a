"""`bfm status`: sites, leader, and who owns what, read from the coordination store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from failover.cli.errors import Unreachable, UsageError

STORE_HELP = "Coordination store URL (default: $BFM_STORE), e.g. sqlite:///var/lib/bfm/bfm.db."


def open_existing_store(url: str | None) -> Any:
    """The store named by ``url``; a clear error if none is named, found or reachable."""
    from failover.adapters.store_url import StoreUrlError, open_store

    if not url:
        raise UsageError("no store given: pass --store URL or set BFM_STORE")
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


def read_status(store: Any, *, now_wall_s: float) -> dict[str, Any]:
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
    return result


def status(
    store: Annotated[str | None, typer.Option(envvar="BFM_STORE", help=STORE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show the sites, the leader and who owns which shards (exit 3: no system found)."""
    coordination = open_existing_store(store)
    try:
        data = read_status(coordination, now_wall_s=time.time())
    finally:
        coordination.close()
    if not data["sites"] and not data["ownership"] and data["leader"] is None:
        raise Unreachable(f"no BFM system found in the store {data['store']}; is it running?")
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    _print(data)


def _print(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    leader = data["leader"] or {}
    console.print(f"store {data['store']}  leader: {leader.get('site', 'none')}")
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
    console.print(sites)
    owners = Table(title="shards per site")
    all_sites = sorted(
        {s for o in data["ownership"].values() for s in o.get("shards_per_site", {})}
    )
    for column in ("component", *all_sites, "max epoch", "draining"):
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
        )
    console.print(owners)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
