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
    from orchestrator.host.runner import RealRunner
    from orchestrator.report import to_json
    from orchestrator.report.inspect import gather, render_text

    if binary is None and DEFAULT_BINARY.exists():
        binary = DEFAULT_BINARY
    runner = RealRunner()
    report = gather(config, binary=binary, runner=runner,
                    service_probe=lambda cfg: _service_view(service_name, cfg, binary, runner))
    data = report.to_dict()
    click.echo(to_json(data) if as_json else render_text(data))


def _service_view(name: str, cfg, binary: Path | None, runner) -> dict:
    """Which manager runs the service, why, and what it says now (observing only)."""
    from orchestrator.errors import OrchestratorError
    from orchestrator.host.clock import RealClock
    from orchestrator.services.base import ServiceTarget
    from orchestrator.services.detect import detect, make_manager

    target = ServiceTarget(name=name, binary=binary or DEFAULT_BINARY, config=Path(cfg.path),
                           index_dir=cfg.index_dir if cfg.index_backend == "sqlite" else None)
    view: dict = {"name": name}
    try:
        kind, reason = detect(target, runner)
        view.update(manager=kind, detected=reason)
        manager = make_manager(kind, target, runner, RealClock())
        status = manager.status()
        view.update(state=status.state.value, main_pid=status.main_pid, detail=status.detail,
                    warnings=manager.warnings())
    except OrchestratorError as exc:
        view["error"] = exc.message
    return view
