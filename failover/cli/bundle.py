"""`bfm bundle --out DIR`: the offline install bundle; `bfm bundle verify DIR`: check one.

``bfm bundle`` runs in a BFM checkout and writes a wheelhouse of BFM and every runtime
dependency, the Helm chart, dashboards, alert rules, collector configurations,
``images.json`` (images to mirror, by digest), ``INSTALL.md`` and ``SHA256SUMS``;
progress goes to stderr. Exit codes: 0 written; 1 a step failed (pip's words follow, and
nothing is left in DIR); 2 DIR is not empty, the chart or another shipped folder is
missing, or BFM does not run from a checkout. ``verify``: 0 every file matches
SHA256SUMS, 1 some are missing, changed or not listed, 2 DIR holds no SHA256SUMS.
docs/offline-install.md explains the bundle.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from failover.cli.errors import CheckFailed, UsageError

bundle_app = typer.Typer(
    help="The offline install bundle: make one (--out DIR), or verify one (verify DIR).",
    invoke_without_command=True,
)
_PYTHON_VERSION = re.compile(r"3\.\d{1,2}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_LIST_AT_MOST = 10


@bundle_app.callback()
def bundle(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="A new or empty folder to write the bundle to."),
    ] = None,
    python_version: Annotated[
        str | None,
        typer.Option(
            "--python-version",
            metavar="X.Y",
            help="The target site's Python (default: the one running bfm).",
        ),
    ] = None,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            metavar="TAG",
            help="A wheel platform tag of the target, e.g. manylinux2014_x86_64; repeatable "
            "(default: this machine's).",
        ),
    ] = None,
    image_digest: Annotated[
        str | None,
        typer.Option(
            "--image-digest",
            metavar="sha256:HEX",
            help="The digest of BFM's pushed image, recorded in images.json.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary on stdout at the end.")
    ] = False,
) -> None:
    """Write the offline install bundle: wheels, chart, dashboards, alerts, collectors,
    images by digest, INSTALL.md and SHA256SUMS."""
    if ctx.invoked_subcommand is not None:
        if out is not None:
            raise UsageError(
                f"--out goes with 'bfm bundle', not 'bfm bundle {ctx.invoked_subcommand}'."
            )
        return
    if out is None:
        help_text = ctx.get_help()  # rich prints it itself and returns ""
        if help_text:
            typer.echo(help_text)
        raise UsageError("give --out DIR, a new or empty folder for the bundle.")
    from failover import bundle as maker
    from failover.bundle_images import ImagesError
    from failover.bundle_wheels import Target

    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not _PYTHON_VERSION.fullmatch(version):
        raise UsageError(f"--python-version {version!r} is not like 3.11.")
    if image_digest is not None and not _DIGEST.fullmatch(image_digest):
        raise UsageError(f"--image-digest {image_digest!r} is not sha256: and 64 hex digits.")
    request = maker.BundleRequest(
        out=out, target=Target(version, tuple(platform or ())), image_digest=image_digest
    )
    try:
        summary = maker.make_bundle(request, progress=_progress)
    except (maker.BundleInputError, ImagesError) as err:
        raise UsageError(str(err)) from None
    except maker.BundleFailed as err:
        raise CheckFailed(f"{err}; nothing was left in {out}.") from None
    if as_json:
        typer.echo(json.dumps(summary.as_json(), sort_keys=True))
    else:
        typer.echo(
            f"bundle of BFM {summary.version} in {out}: {summary.files} files, "
            f"{summary.total_bytes / (1024 * 1024):.1f} MB; see {out / 'INSTALL.md'}"
        )


@bundle_app.command("verify")
def verify(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The bundle folder.")],
) -> None:
    """Check every file of a bundle against its SHA256SUMS (like 'sha256sum -c')."""
    from failover import bundle_sums as sums

    try:
        report = sums.verify_sums(folder)
    except sums.SumsError as err:
        raise UsageError(str(err)) from None
    for label, names in (
        ("missing", report.missing),
        ("changed", report.changed),
        ("not listed", report.unlisted),
    ):
        for name in names[:_LIST_AT_MOST]:
            typer.echo(f"{label}: {name}")
        if len(names) > _LIST_AT_MOST:
            typer.echo(f"{label}: ... and {len(names) - _LIST_AT_MOST} more")
    if not report.ok:
        raise CheckFailed(
            f"{folder} does not match its SHA256SUMS: {len(report.missing)} missing, "
            f"{len(report.changed)} changed, {len(report.unlisted)} not listed."
        )
    typer.echo(f"{folder}: all {report.checked} files match SHA256SUMS")


def _progress(message: str) -> None:
    typer.echo(f"bfm bundle: {message}", err=True)


def register(app: typer.Typer) -> None:
    """Add `bfm bundle` and `bfm bundle verify` to ``app``."""
    app.add_typer(bundle_app, name="bundle")
