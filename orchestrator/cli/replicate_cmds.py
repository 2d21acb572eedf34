"""`orchestrator replicate` and `orchestrator import-storage`: copy instances into an Orthanc."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

DEFAULT_STATE_DIR = "/var/lib/orchestrator"


def _side_options(side: str):
    """--SIDE-user, --SIDE-password-env, --SIDE-password-file."""
    def decorate(fn):
        fn = click.option(f"--{side}-password-file", type=click.Path(dir_okay=False, path_type=Path),
                          help=f"file (mode 0600) holding the {side}'s password")(fn)
        fn = click.option(f"--{side}-password-env", metavar="VAR",
                          help=f"environment variable holding the {side}'s password")(fn)
        fn = click.option(f"--{side}-user", metavar="NAME",
                          help=f"the {side}'s user (else from the URL or ~/.netrc)")(fn)
        return fn
    return decorate


def _common_options(fn):
    options = [
        click.option("--workers", type=click.IntRange(1, 64), default=None,
                     help="parallel transfers (default 8, measured)"),
        click.option("--dry-run", is_flag=True, help="count what would be copied; change nothing"),
        click.option("--verify", is_flag=True,
                     help="check every instance is on the target with the same MD5"),
        click.option("--full", is_flag=True,
                     help="ignore the saved resume point (what the target has is still skipped)"),
        click.option("--check-target", type=click.Choice(["auto", "always", "never"]),
                     default="auto", show_default=True,
                     help="ask the target for each instance before sending it"),
        click.option("--target-config", type=click.Path(exists=True, path_type=Path),
                     help="the target's Orthanc configuration, to warn about recycling limits"),
        click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False),
                     help="CA certificates to verify HTTPS with"),
        click.option("--insecure", is_flag=True, help="do not verify HTTPS certificates"),
        click.option("--timeout", type=click.FloatRange(1, 3600), default=120.0,
                     show_default=True, help="seconds to wait for one answer"),
        click.option("--retries", type=click.IntRange(0, 20), default=5, show_default=True,
                     help="retries of a request that got no answer or a 5xx (backoff 0.5 s "
                     "doubling, at most 8 s)"),
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                     envvar="ORCHESTRATOR_STATE_DIR", default=DEFAULT_STATE_DIR,
                     show_default=True, help="where the resume state is kept"),
        click.option("--json", "as_json", is_flag=True, help="print one JSON document"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _endpoint(url: str, user, password_env, password_file, *, ca_bundle, insecure, timeout,
              workers):
    from orchestrator.orthanc.credentials import resolve
    from orchestrator.replication.transport import Endpoint

    clean, credentials = resolve(url, username=user, password_env=password_env,
                                 password_file=password_file)
    return Endpoint(clean, credentials, verify=not insecure, ca_bundle=ca_bundle,
                    timeout=(min(10.0, timeout), timeout), pool_size=workers + 2)


def _finish(summary, as_json: bool, progress) -> None:
    from orchestrator.report import to_json
    from orchestrator.report.transfer import document, render_text

    progress.close()
    data = document(summary)
    click.echo(to_json(data) if as_json else render_text(data))
    raise SystemExit(int(summary.exit_code))


def _progress(label: str):
    from orchestrator.progress import Progress

    bar = Progress(label)

    def update(summary, total):
        from orchestrator.replication.outcome import CopyOutcome
        detail = ", ".join(f"{o.value} {summary.count(o)}" for o in
                           (CopyOutcome.COPIED, CopyOutcome.PRESENT, CopyOutcome.FAILED) if summary.count(o))
        bar.update(summary.processed, total, detail)
    return bar, update


def _checked(fn):
    @functools.wraps(fn)
    def wrapper(**kw):
        if kw.get("insecure") and kw.get("ca_bundle"):
            raise click.UsageError("--insecure and --ca-bundle contradict each other")
        return fn(**kw)
    return wrapper


@click.command()
@click.argument("source_url")
@click.argument("target_url")
@_side_options("source")
@_side_options("target")
@_common_options
@_checked
def replicate(source_url: str, target_url: str, source_user, source_password_env,
              source_password_file, target_user, target_password_env, target_password_file,
              workers, dry_run, verify, full, check_target, target_config, ca_bundle, insecure,
              timeout, retries, state_dir, as_json) -> None:
    """Copy every instance from one Orthanc to another over REST.

    Parallel and resumable: a rerun continues where the last one stopped and
    skips what the target already has. Exits 0 when everything was copied
    (and verified, with --verify), 1 when anything failed or the run stopped.
    Passwords: --*-password-env/-file, ~/.netrc, or user:pass@ in the URL.
    """
    from orchestrator.replication.options import DEFAULT_WORKERS, Options, PresenceMode
    from orchestrator.replication.pool import RetryPolicy
    from orchestrator.replication.replicate import Replication
    from orchestrator.replication.state import StateStore
    from orchestrator.replication.writes import Writes

    workers = workers or DEFAULT_WORKERS
    net = dict(ca_bundle=ca_bundle, insecure=insecure, timeout=timeout, workers=workers)
    source = _endpoint(source_url, source_user, source_password_env, source_password_file, **net)
    target = _endpoint(target_url, target_user, target_password_env, target_password_file, **net)
    store = StateStore(state_dir, "replicate", source.base_url, target.base_url)
    options = Options(workers=workers, verify=verify, full=full,
                      presence=PresenceMode(check_target), target_config=target_config,
                      policy=RetryPolicy(attempts=retries + 1))
    bar, update = _progress("replicate")
    try:
        summary = Replication(source, target, store, options, Writes(dry=dry_run), update).run()
    finally:
        bar.close()
    _finish(summary, as_json, bar)


@click.command("import-storage")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target_url")
@click.option("--index", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the stopped source's SQLite index (default: DIR/index when present)")
@click.option("--no-index", is_flag=True, help="ignore any index: judge files by their content")
@click.option("--max-size", type=click.IntRange(1, 1 << 20), default=1024, show_default=True,
              metavar="MB", help="largest instance to read into memory")
@_side_options("target")
@_common_options
@_checked
def import_storage(directory: Path, target_url: str, index, no_index, max_size, target_user,
                   target_password_env, target_password_file, workers, dry_run, verify, full,
                   check_target, target_config, ca_bundle, insecure, timeout, retries, state_dir,
                   as_json) -> None:
    """Send the DICOM files of an Orthanc storage folder to an Orthanc.

    With the stopped source's index (DIR/index or --index) exactly its full
    DICOM attachments are sent; otherwise files are judged by content.
    Compressed storage is read; dicom-until-pixel-data copies, JSON summaries
    and the index itself are skipped. Exits 0 when everything was imported, 1
    otherwise.
    """
    from orchestrator.errors import InputError
    from orchestrator.replication.importer import StorageImport
    from orchestrator.replication.options import DEFAULT_WORKERS, Options, PresenceMode
    from orchestrator.replication.pool import RetryPolicy
    from orchestrator.replication.state import StateStore
    from orchestrator.replication.writes import Writes

    if index and no_index:
        raise InputError("--index and --no-index contradict each other", hint="give one")
    workers = workers or DEFAULT_WORKERS
    target = _endpoint(target_url, target_user, target_password_env, target_password_file,
                       ca_bundle=ca_bundle, insecure=insecure, timeout=timeout, workers=workers)
    root = Path(os.path.abspath(directory))
    store = StateStore(state_dir, "import-storage", str(root), target.base_url)
    options = Options(index=index, use_index=not no_index, workers=workers, verify=verify,
                      full=full, presence=PresenceMode(check_target),
                      max_size=max_size * 1024 * 1024, target_config=target_config,
                      policy=RetryPolicy(attempts=retries + 1))
    bar, update = _progress("import")
    try:
        summary = StorageImport(root, target, store, options, Writes(dry=dry_run), update).run()
    finally:
        bar.close()
    _finish(summary, as_json, bar)
