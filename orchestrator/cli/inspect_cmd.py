"""`orchestrator inspect`: what the tool sees of an Orthanc installation."""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_BINARY = Path("/usr/sbin/Orthanc")


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--binary", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"the Orthanc binary to check (default: {DEFAULT_BINARY} if present)")
@click.option("--service", "service_name", default="orthanc", show_default=True, metavar="NAME",
              help="the service to look for (systemd unit, init script or Windows service)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
def inspect(config: Path, binary: Path | None, service_name: str, as_json: bool) -> None:
    """Show what the tool sees of an Orthanc: config, index, binary, hazards.

    CONFIG is the configuration file or folder Orthanc is started with. Exits 0
    when it could inspect (hazards included), 2 when the configuration is bad.
    """
    from orchestrator.report import to_json
    from orchestrator.report.inspect import render_survey
    from orchestrator.wiring import survey_installation

    if binary is None and DEFAULT_BINARY.exists():
        binary = DEFAULT_BINARY
    data = survey_installation(config, binary=binary, service=service_name,
                               default_binary=DEFAULT_BINARY).to_dict()
    click.echo(to_json(data) if as_json else render_survey(data))
