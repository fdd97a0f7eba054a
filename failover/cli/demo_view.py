"""The demo's live status view: sites, who owns what, traffic, recent decisions, faults."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from failover.cli.status import (
    admin_line,
    instances_line,
    license_line,
    read_status,
    update_line,
)
from failover.ports import StoreError

if TYPE_CHECKING:
    from failover.chaos.demo import Demo


def render(run: Demo) -> Group:
    try:
        data = read_status(run.coordination(), now_wall_s=time.time())
    except StoreError as err:  # shown, not fatal: the store may be failing over
        return Group(Panel(f"[red]store unreachable: {err}[/red]", title="bfm demo"))
    leader = (data["leader"] or {}).get("site", "none")
    sites = Table(title=f"sites (leader: {leader})", expand=True)
    for column in ("site", "session", "renewed", "components up"):
        sites.add_column(column)
    for site, info in sorted(data["sites"].items()):
        if "damaged" in info:
            sites.add_row(site, "damaged", "", info["damaged"])
            continue
        age = info["renewed_s_ago"]
        sites.add_row(
            site,
            str(info["session"]),
            f"[red]{age} s ago[/red]" if age > 2 else f"{age} s ago",
            ", ".join(info["components_up"]) or "[red]none[/red]",
        )
    owners = Table(title="shards per site", expand=True)
    columns = sorted({s for o in data["ownership"].values() for s in o.get("shards_per_site", {})})
    for column in ("component", *columns, "epoch", "draining"):
        owners.add_column(column)
    for component, info in sorted(data["ownership"].items()):
        counts = info.get("shards_per_site", {})
        owners.add_row(
            component,
            *(str(counts.get(s, 0)) for s in columns),
            str(info.get("max_epoch", "?")),
            str(info.get("draining", "?")),
        )
    stats = run.producer_stats()
    traffic = (
        f"sent {stats.get('sent', 0)}  acked {stats.get('acked', 0)}  "
        f"last second: {stats.get('recent_acked', 0)} acked, p50 {stats.get('recent_p50_s', 0)} s, "
        f"p99 {stats.get('recent_p99_s', 0)} s  retries {stats.get('retries', 0)}"
    )
    faults = "  ".join(f"{f.action} {f.kind} {f.target}" for f in run.faults) or "none yet"
    return Group(
        sites,
        owners,
        Panel(traffic, title="traffic"),
        Panel("\n".join(_recent_decisions(run)) or "none yet", title="recent decisions"),
        Panel(
            f"scenario {run.scenario}: {faults}\n{admin_line(data.get('admin', {}))}\n"
            + instances_line(data)
            + (f"\n{escape(update_line(data['update']))}" if data.get("update") else "")
            + (f"\n{escape(license_line(data['license']))}" if "license" in data else ""),
            title="faults and operator actions",
        ),
    )


def _recent_decisions(run: Demo, limit: int = 6) -> list[str]:
    lines: list[tuple[str, str]] = []
    for path in run.run_dir.glob("site-*.log"):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines()[-200:]:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if item.get("event") in ("decision", "fenced", "leader"):
                lines.append(
                    (item.get("ts", ""), f"{item.get('ts', '')[11:23]} {item.get('msg', '')}")
                )
    return [text for _, text in sorted(lines)[-limit:]]
