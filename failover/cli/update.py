"""`bfm update plan|apply|status|abort`: rolling updates of a running system.

``plan`` prints the steps for a release manifest (YAML) from the versions the sites
report; ``apply`` starts the update (the leading controller carries it out, step by
step, and a new leader resumes it) and follows it with a progress display until it ends;
``status`` shows where it is; ``abort`` stops it, leaving the system balanced. Exit codes:
0 done, 1 refused or the update did not succeed (rolled back, aborted, failed), 2 a bad
manifest or option, 3 the store unreachable. docs/updates.md explains the steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from failover.cli.durations import duration_option
from failover.cli.errors import CheckFailed, UsageError
from failover.cli.operate import audit_warnings, operator_audit, running_system
from failover.cli.status import RunDirOption, StoreOption, topology_from

if TYPE_CHECKING:
    from failover.core.topology import Topology
    from failover.core.update_plan import Versions
    from failover.core.update_state import UpdateState
    from failover.core.update_steps import Plan
    from failover.ports import CoordinationStore

update_app = typer.Typer(
    help="Rolling updates: plan, apply, follow and abort a release.", no_args_is_help=True
)
ManifestArg = Annotated[Path, typer.Argument(help="The release manifest (YAML).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
CanaryOption = Annotated[
    float,
    typer.Option(
        "--canary-share", min=0.01, max=1.0, help="The canary's share of a site's even share."
    ),
]
SoakOption = Annotated[
    float,
    typer.Option(
        "--soak",
        parser=duration_option,
        metavar="DURATION",
        help="How long the canary must stay healthy.",
    ),
]
FirstOption = Annotated[str, typer.Option("--first-site", help="The worker site updated first.")]


def load_manifest(path: Path) -> dict[str, Any]:
    """The manifest file as a mapping; UsageError naming the file and the problem."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read the manifest {path}: {err.strerror or err}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"the manifest {path} is not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise UsageError(
            f"the manifest {path} must be a mapping with 'version' and 'components' "
            "(see docs/updates.md)"
        )
    return doc


def _plan(
    coordination: CoordinationStore,
    manifest: Path,
    canary_share: float,
    soak_s: float,
    first_site: str,
) -> tuple[Plan, Versions, Topology]:
    from failover.core.update_manifest import ManifestError, parse_release
    from failover.core.update_plan import PlanError, plan_update
    from failover.runtime.update_admin import current_versions

    doc = load_manifest(manifest)
    topology = topology_from(coordination)
    try:
        release = parse_release(doc, topology)
    except ManifestError as err:
        raise UsageError(f"the manifest {manifest} is not valid: {err}") from None
    current = current_versions(coordination, topology)
    missing = [s for s in topology.workers if s not in current]
    if missing:
        raise CheckFailed(
            f"site(s) {', '.join(missing)} report no versions (down, or running an older "
            "bfm); bring them up, then plan again"
        )
    try:
        plan = plan_update(
            current,
            release,
            topology,
            canary_share=canary_share,
            soak_s=soak_s,
            first_site=first_site,
        )
    except (PlanError, ValueError) as err:
        raise UsageError(str(err)) from None
    return plan, current, topology


@update_app.command("plan")
def plan(
    manifest: ManifestArg,
    canary_share: CanaryOption = 0.25,
    soak_s: SoakOption = 30.0,
    first_site: FirstOption = "a",
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the steps that bring the running system to the release (changes nothing)."""
    with running_system(store, run_dir) as coordination:
        steps, _, _ = _plan(coordination, manifest, canary_share, soak_s, first_site)
    _print_plan(steps, as_json=as_json)


def _print_plan(steps: Plan, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(steps.to_doc(), indent=2, sort_keys=True))
        return
    if not steps.steps:
        typer.echo(f"release {steps.release}: nothing to do, every site runs it already")
        return
    typer.echo(f"release {steps.release}: {len(steps.steps)} steps (plan {steps.plan_id})")
    for n, step in enumerate(steps.steps, 1):
        typer.echo(f"{n:3d}. {step.summary}")
        if step.explanation:
            typer.echo(f"     {step.explanation}")


@update_app.command("apply")
def apply(
    manifest: ManifestArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and print the plan; change nothing.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the update until it ends.")
    ] = True,
    timeout_s: Annotated[
        float,
        typer.Option(
            "--timeout",
            parser=duration_option,
            metavar="DURATION",
            help="Stop following after this long (the update goes on).",
        ),
    ] = 3600.0,
    canary_share: CanaryOption = 0.25,
    soak_s: SoakOption = 30.0,
    first_site: FirstOption = "a",
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start the update (the leading controller runs it) and follow it until it ends."""
    from failover.adapters.system_clock import SystemClock
    from failover.core.update_state import StateError
    from failover.runtime.admin import Refused
    from failover.runtime.audit_log import AuditError
    from failover.runtime.update_admin import begin

    with running_system(store, run_dir) as coordination:
        steps, current, topology = _plan(coordination, manifest, canary_share, soak_s, first_site)
        if dry_run:
            _print_plan(steps, as_json=as_json)
            if not as_json:
                typer.echo("dry run: nothing was started")
            return
        audit = operator_audit(run_dir, coordination)
        try:
            state = begin(
                coordination,
                steps,
                current,
                topology=topology,
                now_wall_s=SystemClock().wall(),
                audit=audit,
            )
        except (Refused, StateError) as err:
            raise CheckFailed(f"update not started: {err}") from None
        except AuditError as err:
            raise CheckFailed(f"the update was started but not audited: {err}") from None
        audit_warnings(audit)
        if not as_json:
            typer.echo(
                f"update to release {steps.release} started: {len(steps.steps)} steps; the "
                "leading controller runs them ('bfm update abort' stops it)"
            )
        if wait and not state.finished:
            state = _follow(coordination, timeout_s, quiet=as_json)
    _finish(state, as_json=as_json)


def _follow(coordination: CoordinationStore, timeout_s: float, *, quiet: bool) -> UpdateState:
    """Show the update's progress until it ends or ``timeout_s`` passed (Ctrl-C: stop
    following; the update goes on)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from failover.runtime.update_admin import read_update

    deadline_s = time.monotonic() + timeout_s
    state, _ = read_update(coordination)
    assert state is not None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task("starting", total=len(state.steps))
        while not state.finished and time.monotonic() < deadline_s:
            time.sleep(0.5)
            now, _ = read_update(coordination)
            if now is None:
                raise CheckFailed("the update's state was removed while it ran")
            state = now
            step = state.steps[min(state.index, len(state.steps) - 1)]
            note = state.notes[state.index] if state.index < len(state.notes) else ""
            progress.update(
                task,
                total=len(state.steps),
                completed=sum(1 for p in state.phases if p.value in ("done", "skipped")),
                description=f"{state.mode.value}: {step.summary}" + (f" ({note})" if note else ""),
            )
    return state


def _finish(state: UpdateState, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(state.to_doc(), indent=2, sort_keys=True))
    else:
        typer.echo(_describe(state))
    if not state.finished:
        raise CheckFailed("stopped following; the update goes on: see 'bfm update status'")
    if state.outcome.value != "succeeded":
        raise CheckFailed(f"update {state.outcome.value}: {state.reason}")


def _describe(state: UpdateState) -> str:
    lines = [
        f"release {state.release}: {state.outcome.value} ({state.mode.value}), "
        f"step {min(state.index + 1, len(state.steps))} of {len(state.steps)}"
    ]
    if state.reason:
        lines.append(f"reason: {state.reason}")
    for n, (step, phase) in enumerate(zip(state.steps, state.phases, strict=True), 1):
        note = state.notes[n - 1]
        lines.append(f"{n:3d}. [{phase.value:>7}] {step.summary}" + (f"  {note}" if note else ""))
    return "\n".join(lines)


@update_app.command("status")
def status(
    store: StoreOption = None, run_dir: RunDirOption = None, as_json: JsonOption = False
) -> None:
    """Where the update is: each step with its phase, and the outcome."""
    from failover.core.update_state import StateError
    from failover.runtime.update_admin import damaged, read_update

    with running_system(store, run_dir) as coordination:
        try:
            state, _ = read_update(coordination)
        except StateError as err:
            raise CheckFailed(damaged(err)) from None
    if state is None:
        typer.echo("{}" if as_json else "no update was ever started")
        return
    if as_json:
        typer.echo(json.dumps(state.to_doc(), indent=2, sort_keys=True))
        return
    typer.echo(_describe(state))


@update_app.command("abort")
def abort(
    force: Annotated[bool, typer.Option("--force", help="Remove a damaged update state.")] = False,
    store: StoreOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Stop the update: skip what is left, then undrain and rebalance (restores nothing)."""
    from failover.core.update_state import StateError
    from failover.runtime.admin import Refused
    from failover.runtime.audit_log import AuditError
    from failover.runtime.update_admin import abort_update, damaged

    with running_system(store, run_dir) as coordination:
        audit = operator_audit(run_dir, coordination)
        try:
            state, aborted = abort_update(coordination, force=force, audit=audit)
        except AuditError as err:
            raise CheckFailed(f"the abort was made but not audited: {err}") from None
        except StateError as err:
            raise CheckFailed(damaged(err)) from None
        except Refused as err:
            raise CheckFailed(str(err)) from None
    audit_warnings(audit)
    if state is None:
        typer.echo("no update to abort" + (" (a damaged state was removed)" if force else ""))
    elif not aborted:
        typer.echo(f"the update already ended: {state.outcome.value}; nothing to abort")
    else:
        typer.echo(
            f"aborting the update to release {state.release}: the controller now undrains and "
            "rebalances what it changed; follow it with 'bfm update status'"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(update_app, name="update")
