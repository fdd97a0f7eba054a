"""`bfm license`: the system's license as the leader judges it, and dev/test licenses.

``bfm license`` (or ``bfm license status``) shows each site's dongle (validity, serial,
expiry, what is wrong and the fix), the system's state and the grace left; exit 1 when
unlicensed or when no leader has judged a license (licensing not configured), 3 when the
store is unreachable. ``bfm license keygen`` makes a dev/test key pair and ``bfm license
issue`` signs a license file with it; production licenses are signed elsewhere, with a
key that never enters this repository. Both append an audit record (docs/audit.md) to the
run directory's audit log (``--run-dir``, or ``$BFM_AUDIT_LOG``), never key material:
the public key's and the license file's SHA-256.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from failover.cli.durations import duration_option
from failover.cli.errors import CheckFailed, UsageError
from failover.cli.operate import running_system
from failover.cli.status import RunDirOption, StoreOption

if TYPE_CHECKING:
    from failover.runtime.audit_log import AuditTrail
    from failover.runtime.license_docs import LicenseStatus

license_app = typer.Typer(
    help="The system's license: status, and dev/test keys and license files.",
    invoke_without_command=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
STALE_AFTER_S = 30.0  # a verdict older than this: the leader may be down


@license_app.callback()
def main(
    ctx: typer.Context,
    store: StoreOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the license (the same as 'bfm license status')."""
    if ctx.invoked_subcommand is None:
        status(store=store, run_dir=run_dir, as_json=as_json)


@license_app.command("status")
def status(
    store: StoreOption = None, run_dir: RunDirOption = None, as_json: JsonOption = False
) -> None:
    """Each site's dongle, the system's license state and the grace period left."""
    from failover.core.licensing import LicenseState
    from failover.runtime.license_docs import read_status

    with running_system(store, run_dir) as coordination:
        try:
            found = read_status(coordination)
        except ValueError as err:
            raise CheckFailed(
                f"license/status is damaged ({err}); the leader rewrites it within seconds, "
                "try again"
            ) from None
    if found is None:
        raise CheckFailed(
            "no license verdict in the store: licensing is not configured (start every site "
            "with --license-dir, see docs/licensing.md) or no leader has judged it yet"
        )
    age_s = max(0.0, time.time() - found.at_wall_s)
    if as_json:
        typer.echo(json.dumps({**found.to_doc(), "age_s": round(age_s, 1)}, indent=2))
    else:
        _print(found, age_s)
    if found.state is LicenseState.UNLICENSED:
        raise typer.Exit(1)


def _print(found: LicenseStatus, age_s: float) -> None:
    from failover.core.licensing import rfc3339

    typer.echo(f"license: {found.state.value.upper()}: {found.reason}")
    grace = f"{found.grace_remaining_s / 3600:.1f} h of {found.grace_s / 3600:.1f} h left"
    stale = f" (STALE: {age_s:.0f} s old; is a leader running?)" if age_s > STALE_AFTER_S else ""
    typer.echo(
        f"system {found.system_id}; grace {grace}; judged by {found.leader} "
        f"{age_s:.0f} s ago{stale}"
    )
    rows = [("site", "presenting", "dongle", "serial", "expires", "days left")]
    for site, evidence in sorted(found.dongles.items()):
        expires = evidence.expires_at_wall_s
        rows.append(
            (
                site,
                "yes" if site in found.presenting else "no (site down)",
                evidence.status.value,
                evidence.serial or "-",
                rfc3339(expires) if expires is not None else "-",
                f"{(expires - found.at_wall_s) / 86400:.1f}" if expires is not None else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for site, evidence in sorted(found.dongles.items()):
        if evidence.reason:
            typer.echo(f"  {site}: {evidence.reason}")


ReasonOption = Annotated[str, typer.Option("--reason", help="Why, for the audit log.")]


@contextmanager
def _audited(store: str | None, run_dir: Path | None) -> Iterator[AuditTrail | None]:
    """The audit trail of a license change (docs/audit.md): the run directory's or
    $BFM_AUDIT_LOG's, anchored in the system's store when it can be reached. None, with a
    warning, when no audit log is named: keys and files made outside any system."""
    import os

    from failover.adapters.system_clock import SystemClock
    from failover.cli.errors import CliError
    from failover.cli.operate import audit_warnings, quiet_audit_logger
    from failover.cli.status import open_existing_store, store_url
    from failover.runtime.audit_log import (
        AUDIT_LOG_ENV,
        AuditError,
        AuditTrail,
        locate_audit_log,
        operator_identity,
    )

    try:
        url: str | None = store_url(store, run_dir)
    except CliError:
        url = None
    path = locate_audit_log(run_dir=run_dir, store_url=url, environ=os.environ)
    if path is None:
        typer.echo(
            f"warning: not audited: no audit log named (pass --run-dir DIR or set "
            f"{AUDIT_LOG_ENV}=PATH to audit license changes)",
            err=True,
        )
        yield None
        return
    coordination = None
    if url:
        try:
            coordination = open_existing_store(url)
        except CliError:
            coordination = None  # the record is written all the same, unanchored (a warning)
    quiet_audit_logger()
    trail = AuditTrail(path, coordination, who=operator_identity(), clock=SystemClock())
    try:
        try:
            trail.check()
        except AuditError as err:
            raise CheckFailed(f"{err}; nothing was changed") from None
        try:
            yield trail
        except AuditError as err:
            raise CheckFailed(f"the change was made but not audited: {err}") from None
        audit_warnings(trail)
    finally:
        if coordination is not None:
            coordination.close()


def _sha256(path: Path) -> str:
    return _sha256_bytes(path.read_bytes())


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@license_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for the two key files.")],
    reason: ReasonOption = "",
    store: StoreOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Make a dev/test key pair: <out>/signing.key (keep it private) and <out>/public.key
    (every site's configuration). Never for production licenses."""
    from failover.adapters.license_files import (
        LicenseKeyError,
        generate_keypair,
        save_private_key,
        save_public_key,
    )

    with _audited(store, run_dir) as audit:
        out.mkdir(parents=True, exist_ok=True)
        private, public = generate_keypair()
        try:
            save_private_key(out / "signing.key", private)
            save_public_key(out / "public.key", public)
        except LicenseKeyError as err:
            raise UsageError(str(err)) from None
        if audit is not None:
            after = {
                "signing_key": str(out / "signing.key"),
                "public_key": str(out / "public.key"),
                "public_key_sha256": _sha256(out / "public.key"),
            }
            what = f"dev/test key pair made in {out}"
            audit.record("license.keygen", what, why=reason, after=after)
    typer.echo(f"wrote {out / 'signing.key'} (dev/test signing key) and {out / 'public.key'}")


@license_app.command("issue")
def issue(
    key: Annotated[Path, typer.Option("--key", help="The dev/test signing key (keygen).")],
    system_id: Annotated[str, typer.Option("--system-id", help="The licensed system's id.")],
    serial: Annotated[str, typer.Option("--serial", help="The dongle serial.")] = "HSD-DEV-0001",
    site: Annotated[str, typer.Option("--site", help="'any' (the clone) or one site.")] = "any",
    features: Annotated[
        str, typer.Option("--features", help="Comma-separated licensed features.")
    ] = "bfm",
    valid_for_s: Annotated[
        float,
        typer.Option(
            "--valid-for",
            parser=duration_option,
            metavar="DURATION",
            help="How long from now the license is valid (e.g. 365d).",
        ),
    ] = 365 * 86400.0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the license file here (default: stdout).")
    ] = None,
    reason: ReasonOption = "",
    store: StoreOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Sign a license file with a dev/test key (for tests, demos and labs)."""
    from failover.adapters.files import write_text_atomically
    from failover.adapters.license_files import (
        LicenseKeyError,
        LicensePayload,
        MalformedLicense,
        load_private_key,
    )
    from failover.adapters.license_files import issue as sign

    try:
        private = load_private_key(key)
    except LicenseKeyError as err:
        raise UsageError(f"--key: {err}") from None
    now = time.time()
    try:
        payload = LicensePayload(
            system_id=system_id,
            dongle_serial=serial,
            issued_at_wall_s=now,
            expires_at_wall_s=now + valid_for_s,
            features=tuple(f.strip() for f in features.split(",") if f.strip()),
            site=site,
        )
    except MalformedLicense as err:
        raise UsageError(str(err)) from None
    text = sign(payload, private)
    with _audited(store, run_dir) as audit:
        before = {"out": str(out), "sha256": _sha256(out)} if out and out.is_file() else None
        if out is None:
            typer.echo(text, nl=False)
        else:
            try:
                write_text_atomically(out, text)
            except OSError as err:
                raise UsageError(f"cannot write {out}: {err.strerror or err}") from None
        if audit is not None:
            where = str(out) if out is not None else "stdout"
            after = {**payload.to_doc(), "out": where, "sha256": _sha256_bytes(text.encode())}
            what = f"license issued to {where}: system {system_id}, dongle {serial}, site {site}"
            audit.record("license.issue", what, why=reason, before=before, after=after)
    if out is not None:
        typer.echo(f"wrote {out}: system {system_id}, dongle {serial}, site {site}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(license_app, name="license")
