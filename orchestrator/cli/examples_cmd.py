"""`examples`: list, print or copy the example plans and the systemd unit shipped with the tool."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from orchestrator.errors import InputError


@click.command()
@click.argument("name", required=False)
@click.option("--copy", "copy_to", type=click.Path(path_type=Path), metavar="DIR",
              help="Copy every example into DIR (created if missing; existing files are kept).")
def examples(name: str | None, copy_to: Path | None) -> None:
    """List the example plans and unit; print one (NAME), or copy them all (--copy DIR)."""
    from orchestrator.examples import example_files, examples_root, find_example

    root = examples_root()
    if name is not None:
        click.echo(find_example(root, name).read_text(), nl=False)
        return
    if copy_to is None:
        for rel in example_files(root):
            click.echo(str(rel))
        click.echo(f"(from {root}; print one with `orchestrator examples NAME`, "
                   "copy them with --copy DIR)", err=True)
        return
    kept = 0
    for rel in example_files(root):
        dest = copy_to / rel
        if dest.exists():
            kept += 1
            continue
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dest)
        except OSError as exc:
            raise InputError(f"cannot copy {rel} to {dest}: {exc.strerror or exc}",
                             hint="check that DIR is writable") from exc
        click.echo(f"copied {dest}")
    if kept:
        click.echo(f"kept {kept} existing file(s) unchanged", err=True)
