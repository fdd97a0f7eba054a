"""Operator commands against a running system: drain, undrain (also partly, a canary),
switchover, rebalance, events, watch.

Each change is one compare-and-set of ``admin/policy`` (``failover.runtime.admin``); the
leading controller applies it within a decision round, moving shards through drains so no
shard ever has two owners. Every command prints what changed and what happens next, and
appends what came of it (done, unchanged, refused) to the audit log (docs/audit.md).
Exit codes: 0 done (or nothing to change), 1 refused (e.g. draining the last serving
site), 2 bad arguments (an unknown site or component, naming the known ones), 3 the
store cannot be reached or no system runs there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from failover.cli.durations import duration_option, point_in_time_option
from failover.cli.errors import CheckFailed, Unreachable, UsageError
from failover.cli.status import (
    RunDirOption,
    StoreOption,
    events_table,
    open_existing_store,
    read_event_docs,
    read_status,
    render,
    store_url,
    topology_from,
)

if TYPE_CHECKING:
    from failover.ports import CoordinationStore
    from failover.runtime.admin import PolicyChange
    from failover.runtime.audit_log import AuditTrail

ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why, for the history (bfm events) and bfm status.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@contextmanager
def running_system(store: str | None, run_dir: Any) -> Iterator[CoordinationStore]:
    """The store of a running system; exit 3 when unreachable or nothing runs there."""
    from failover.ports import StoreUnavailable
    from failover.runtime.documents import LEADER_KEY, OWNERSHIP_PREFIX

    url = store_url(store, run_dir)
    coordination = open_existing_store(url)
    try:
        try:
            leader = coordination.get(LEADER_KEY)
            owned = coordination.list(OWNERSHIP_PREFIX)
        except StoreUnavailable as err:
            raise Unreachable(f"cannot reach the store {url} ({err}); is it running?") from None
        if leader is None or not owned:
            missing = "no controller leader" if leader is None else "no ownership documents"
            raise Unreachable(
                f"no running BFM system in the store {url} ({missing}); start it first "
                "(bfm demo, or bfm site run at every site)"
            )
        yield coordination
    finally:
        coordination.close()


def _changed_by() -> str:
    from failover.runtime.audit_log import operator_identity

    return operator_identity()


def operator_audit(run_dir: Any, coordination: CoordinationStore) -> AuditTrail:
    """The audit trail of an operator's change on this system, checked writable first:
    exit 2 when no audit log is named, 1 when it cannot be written (nothing is changed
    either way: no change is made unaudited)."""
    import os

    from failover.adapters.system_clock import SystemClock
    from failover.runtime.audit_log import (
        AUDIT_LOG_ENV,
        AuditError,
        AuditTrail,
        locate_audit_log,
    )

    path = locate_audit_log(
        run_dir=Path(run_dir) if run_dir else None, store_url=coordination.url, environ=os.environ
    )
    if path is None:
        raise UsageError(
            f"no audit log for the store {coordination.url}: pass --run-dir DIR or set "
            f"{AUDIT_LOG_ENV}=PATH (operator changes are never made unaudited); nothing changed"
        )
    quiet_audit_logger()
    ship_audit_records(Path(run_dir) if run_dir else None)
    trail = AuditTrail(path, coordination, who=_changed_by(), clock=SystemClock())
    try:
        trail.check()
    except AuditError as err:
        raise CheckFailed(f"{err}; nothing was changed") from None
    return trail


def ship_audit_records(run_dir: Path | None) -> None:
    """Send this command's audit records to Loki too, when one is known: ``BFM_LOKI_URL``,
    else the run directory's log store (``logstore.url``); flushed as the command ends
    (at most 2 s). Without one they are in the audit log only."""
    import atexit
    import logging
    import os

    from bfm_observe.loki import ship_logger
    from failover.chaos.logstore_process import URL_FILE

    url = os.environ.get("BFM_LOKI_URL", "").strip()
    if not url and run_dir is not None and (run_dir / URL_FILE).is_file():
        url = (run_dir / URL_FILE).read_text(encoding="utf-8").strip()
    if url:
        shipper = ship_logger("bfm.audit", url, site="ops", component="bfm-cli")
        logging.getLogger("bfm.audit").setLevel(logging.INFO)  # records are INFO lines
        atexit.register(shipper.close, 2.0)


def audit_warnings(trail: AuditTrail) -> None:
    """Say on stderr which audit records are not anchored yet, and why."""
    for sentence in trail.warnings:
        typer.echo(f"warning: {sentence}", err=True)


def quiet_audit_logger() -> None:
    """Keep Python's last-resort handler from printing ``bfm.audit`` warnings in a
    command whose logging is not configured: ``audit_warnings`` says them once, clearly."""
    import logging

    audit_logger = logging.getLogger("bfm.audit")
    if not audit_logger.handlers:
        audit_logger.addHandler(logging.NullHandler())


def _apply(
    store: str | None,
    run_dir: Any,
    as_json: bool,
    reason: str,
    action: Callable[..., PolicyChange],
    *names: str,
) -> None:
    """Run one ``failover.runtime.admin`` change (``action(store, *names, ...)``) on the
    running system, as this user on this host, and print what changed and what is next."""
    from failover.adapters.system_clock import SystemClock
    from failover.ports import Conflict, StoreError, StoreUnavailable
    from failover.runtime.admin import Refused, outlook
    from failover.runtime.audit_log import AuditError

    with running_system(store, run_dir) as coordination:
        topology = topology_from(coordination)
        audit = operator_audit(run_dir, coordination)
        try:
            change = action(
                coordination,
                *(name.lower() for name in names),
                topology=topology,
                clock=SystemClock(),
                changed_by=audit.who,
                reason=reason,
                audit=audit,
            )
        except AuditError as err:
            raise CheckFailed(f"the change was made but not audited: {err}") from None
        except Refused as err:
            raise CheckFailed(f"{err}.") from None
        except Conflict as err:
            raise CheckFailed(str(err)) from None
        except StoreUnavailable as err:
            raise Unreachable(
                f"cannot reach the store {coordination.url} ({err}); nothing was changed"
            ) from None
        except ValueError as err:
            raise UsageError(str(err)) from None
        try:
            ahead = outlook(coordination, change.after, topology=topology, clock=SystemClock())
            next_step = ahead.sentence()
        except StoreError as err:  # the change stands; only the forecast is missing
            next_step = f"unknown (could not read the ownership: {err}); see 'bfm status'"
    audit_warnings(audit)
    if as_json:
        data = {
            "action": change.action,
            "changed": change.changed,
            "summary": change.summary,
            "before": change.before.to_doc(),
            "after": change.after.to_doc(),
            "replaced_damaged": change.replaced_damaged,
            "next": next_step,
        }
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if change.replaced_damaged:
        typer.echo(f"warning: {change.replaced_damaged}; replaced it", err=True)
    if not change.changed:
        typer.echo(f"{change.summary}; nothing changed. Next: {next_step}.")
        return
    typer.echo(f"{change.summary}. Next: {next_step}.")
    typer.echo("Follow it with 'bfm watch'; the decisions appear in 'bfm events'.")


def drain(
    site: Annotated[str, typer.Argument(help="The worker site to empty: a or b.")],
    reason: ReasonOption = "",
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move all work off SITE, batch by batch, and keep it empty until `bfm undrain SITE`."""
    from failover.runtime import admin

    _apply(store, run_dir, as_json, reason, admin.drain, site)


def undrain(
    site: Annotated[str, typer.Argument(help="The drained worker site: a or b.")],
    canary: Annotated[
        int | None,
        typer.Option(
            "--canary",
            min=1,
            metavar="N",
            help="A partial undrain: SITE holds at most N shards of each component.",
        ),
    ] = None,
    reason: ReasonOption = "",
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let SITE hold work again: the split evens out once it is stable past its hold-off.

    With --canary N only N shards of each component go to SITE (a little live traffic
    passes it, the rest stays on the other site) until a plain `bfm undrain SITE`.
    """
    from failover.runtime import admin

    if canary is None:
        _apply(store, run_dir, as_json, reason, admin.undrain, site)
        return
    shards = canary

    def partial(coordination: CoordinationStore, name: str, **how: Any) -> PolicyChange:
        return admin.canary(coordination, name, shards, **how)

    _apply(store, run_dir, as_json, reason, partial, site)


def switchover(
    component: Annotated[str, typer.Argument(help="backbone, eep, eap, aam, msm or gsm.")],
    to: Annotated[str, typer.Option("--to", help="The worker site to move it to: a or b.")],
    reason: ReasonOption = "",
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move every shard of COMPONENT to one site and pin it there until `bfm rebalance`."""
    from failover.runtime import admin

    _apply(store, run_dir, as_json, reason, admin.switchover, component, to)


def rebalance(
    reason: ReasonOption = "",
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Clear every pin (switchover): each component spreads evenly over the undrained sites.

    The spread happens in batches once every such site is stable past its hold-off, as
    after a site's return; drained sites stay drained (bfm undrain).
    """
    from failover.runtime import admin

    _apply(store, run_dir, as_json, reason, admin.rebalance)


def events(
    since: Annotated[
        float | None,
        typer.Option(
            "--since",
            parser=point_in_time_option,
            metavar="TIME",
            help="Only events from this point on: a duration ago (10m, 2h) or RFC 3339.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, the newest.")] = 100,
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The decision history: each ownership decision and operator change, with its reason."""
    with running_system(store, run_dir) as coordination:
        docs = read_event_docs(coordination, since_wall_s=since, limit=limit)
    if as_json:
        typer.echo(json.dumps(docs, indent=2, sort_keys=True))
        return
    if not docs:
        typer.echo("no events" + (" in that time" if since is not None else " recorded yet"))
        return
    from failover.cli.status import console

    console().print(events_table(docs))


def watch(
    interval: Annotated[
        float,
        typer.Option(
            "--interval", parser=duration_option, metavar="DURATION", help="Refresh every."
        ),
    ] = 1.0,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop after this many refreshes.")
    ] = None,
    store: StoreOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """`bfm status`, refreshed in place until Ctrl-C (or --count refreshes)."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from failover.ports import StoreError

    with running_system(store, run_dir) as coordination:
        console = Console()
        shown = 0
        try:
            with Live(console=console, auto_refresh=False, transient=False) as live:
                while count is None or shown < count:
                    stamp = time.strftime("%H:%M:%S")
                    try:
                        view: Any = render(read_status(coordination, now_wall_s=time.time()))
                    except StoreError as err:
                        view = Text(f"store unreachable ({err}); retrying", style="red")
                    footer = f"{stamp}  refresh every {interval:g} s; Ctrl-C stops"
                    live.update(Group(view, Text(footer, style="dim")), refresh=True)
                    shown += 1
                    if count is None or shown < count:
                        time.sleep(interval)
        except KeyboardInterrupt:
            return


def register(app: typer.Typer) -> None:
    app.command("drain")(drain)
    app.command("undrain")(undrain)
    app.command("switchover")(switchover)
    app.command("rebalance")(rebalance)
    app.command("events")(events)
    app.command("watch")(watch)
