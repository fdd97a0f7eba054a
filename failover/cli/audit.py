"""`bfm audit verify|show`: check the audit log's hash chain against its anchored head, and
list its records.

``verify`` reads every record of the log (``--audit-log``, else the run directory's, else
``$BFM_AUDIT_LOG``, else beside a sqlite store) and the head anchored in the store
(``audit/head``), and lists each finding: a record edited, removed, reordered, cut off,
or written after the anchored head. Exit codes: 0 intact, 1 tampered (each finding
listed), 2 bad input or an unreadable log, 3 the store cannot be reached.
``show`` lists the records (``--since``), without checking them. docs/audit.md explains
the format and what a check can and cannot prove.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from failover.cli.durations import point_in_time_option
from failover.cli.errors import CliError, Unreachable, UsageError
from failover.cli.status import RunDirOption, StoreOption, store_url

if TYPE_CHECKING:
    from failover.core.audit import AuditHead, AuditRecord, Verdict

audit_app = typer.Typer(
    help="The audit trail: verify its hash chain, show its records.", no_args_is_help=True
)
AuditLogOption = Annotated[
    Path | None,
    typer.Option("--audit-log", help="The audit log (default: the run directory's audit.log)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SETTLE_S = 1.0
"""How long verify waits before looking again when only the newest records are unanchored
(an appender writes the file first and the head a moment later)."""
FINDINGS_SHOWN = 50


def _log_path(audit_log: Path | None, run_dir: Path | None, store: str | None) -> Path:
    from failover.runtime.audit_log import AUDIT_LOG_ENV, locate_audit_log

    if audit_log is not None:
        return audit_log
    try:
        url: str | None = store_url(store, run_dir)
    except CliError:
        url = None
    path = locate_audit_log(run_dir=run_dir, store_url=url, environ=os.environ)
    if path is None:
        raise UsageError(
            f"no audit log given: pass --audit-log PATH or --run-dir DIR, or set {AUDIT_LOG_ENV}"
        )
    return path


@audit_app.command("verify")
def verify(
    run_dir: RunDirOption = None,
    audit_log: AuditLogOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the audit log's hash chain and its end against the head in the store.

    Exit 0 intact; 1 tampered (a record edited, removed, reordered or cut off; each
    finding listed); 2 bad input or an unreadable log; 3 the store unreachable.
    """
    from failover.adapters.system_clock import SystemClock
    from failover.cli.status import open_existing_store
    from failover.core.audit import Problem

    path = _log_path(audit_log, run_dir, store)
    try:
        url = store_url(store, run_dir)
    except UsageError:
        if run_dir is not None:
            raise  # says what is wrong with the run directory
        raise UsageError(
            "no store to check the log's head against: pass --store URL or --run-dir DIR, "
            "or set BFM_STORE (without it, records cut off the end cannot be detected)"
        ) from None
    if path.is_dir():
        raise UsageError(f"--audit-log {path} is a directory, not an audit log")
    coordination = open_existing_store(url)
    try:
        verdict, damaged_head = _verify(coordination, path)
        only_unanchored = verdict.findings and all(
            f.problem is Problem.UNANCHORED for f in verdict.findings
        )
        if only_unanchored:
            SystemClock().sleep(SETTLE_S)
            verdict, damaged_head = _verify(coordination, path)
    finally:
        coordination.close()
    if verdict.head is None and verdict.records == 0 and not path.exists() and not damaged_head:
        raise UsageError(f"no audit log at {path} and no head anchored in {url}: nothing to check")
    intact = verdict.intact and not damaged_head
    if as_json:
        typer.echo(json.dumps(_verdict_doc(path, url, verdict, damaged_head), indent=2))
    else:
        _print_verdict(path, url, verdict, damaged_head)
    if not intact:
        raise typer.Exit(1)


def _verify(coordination: Any, path: Path) -> tuple[Verdict, str]:
    """The verdict, and why the store's head could not be read ("" if it could)."""
    from failover.ports import StoreError
    from failover.runtime.audit_log import AuditError, read_head, verify_log

    head: AuditHead | None = None
    damaged = ""
    try:
        head = read_head(coordination)
    except StoreError as err:
        raise Unreachable(f"cannot reach the store {coordination.url} ({err})") from None
    except ValueError as err:
        damaged = f"the store's audit/head is damaged ({err}): it proves nothing"
    try:
        return verify_log(path, head), damaged
    except AuditError as err:
        raise UsageError(str(err)) from None


def _verdict_doc(path: Path, url: str, verdict: Verdict, damaged_head: str) -> dict[str, Any]:
    return {
        "audit_log": str(path),
        "store": url,
        "records": verdict.records,
        "head": verdict.head.to_doc() if verdict.head else None,
        "intact": verdict.intact and not damaged_head,
        "damaged_head": damaged_head,
        "findings": [
            {"line": f.line, "seq": f.seq, "problem": f.problem.value, "detail": f.detail}
            for f in verdict.findings
        ],
    }


def _print_verdict(path: Path, url: str, verdict: Verdict, damaged_head: str) -> None:
    head = verdict.head
    anchored = f"head at record {head.seq} in {url}" if head else f"no head in {url}"
    if verdict.intact and not damaged_head:
        typer.echo(f"audit log {path}: intact: {verdict.records} record(s), {anchored}")
        return
    count = len(verdict.findings) + (1 if damaged_head else 0)
    typer.echo(
        f"audit log {path}: TAMPERED: {count} finding(s) in {verdict.records} record(s), {anchored}"
    )
    if damaged_head:
        typer.echo(f"  {damaged_head}")
    for finding in verdict.findings[:FINDINGS_SHOWN]:
        typer.echo(f"  {finding.sentence()}")
    if len(verdict.findings) > FINDINGS_SHOWN:
        typer.echo(f"  ... and {len(verdict.findings) - FINDINGS_SHOWN} more (--json lists all)")


@audit_app.command("show")
def show(
    since: Annotated[
        float | None,
        typer.Option(
            "--since",
            parser=point_in_time_option,
            metavar="TIME",
            help="Only records from this point on: a duration ago (10m, 2h) or RFC 3339.",
        ),
    ] = None,
    run_dir: RunDirOption = None,
    audit_log: AuditLogOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the audit records, oldest first: who did what, why, and the trace.

    The records are shown as they are; 'bfm audit verify' checks them.
    """
    from failover.runtime.audit_log import AuditError, read_records

    path = _log_path(audit_log, run_dir, store)
    if not path.is_file():
        raise UsageError(f"no audit log at {path}")
    records: list[AuditRecord] = []
    try:
        for item in read_records(path):
            if isinstance(item, tuple):
                line, why = item
                typer.echo(f"warning: line {line} is not an audit record ({why})", err=True)
            elif since is None or item.at_wall_s >= since:
                records.append(item)
    except AuditError as err:
        raise UsageError(str(err)) from None
    if as_json:
        typer.echo(json.dumps([r.to_doc() for r in records], indent=2, sort_keys=True))
        return
    if not records:
        typer.echo("no audit records" + (" in that time" if since is not None else " yet"))
        return
    from failover.cli.status import console

    console().print(_table(records))


def _table(records: list[AuditRecord]) -> Any:
    from rich.table import Table
    from rich.text import Text

    from failover.core.licensing import rfc3339

    table = Table(title="audit log (unchecked: 'bfm audit verify' checks it)")
    for column in ("#", "time (UTC)", "who", "action", "outcome", "what", "why"):
        table.add_column(column)
    table.add_column("trace id", overflow="fold")  # whole, to search the logs for it
    for r in records:
        cells = (r.who, r.action, r.outcome, r.what, r.why, r.trace_id or "-")
        # Text, not markup: what operators typed ("[red]" in a --reason) is shown as typed.
        table.add_row(str(r.seq), rfc3339(round(r.at_wall_s)), *(Text(c) for c in cells))
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
