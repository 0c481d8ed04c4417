"""``hermes-lab dashboard``: start the Streamlit app, bound to 127.0.0.1 unless ``--host`` says otherwise."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from dashboard.settings import DEFAULT_MODEL, DEFAULT_RUNS, DEFAULT_VIDEO, Settings
from hermes_policy.cli_options import AllowPickleOption, DeviceMapOption, MaxMemoryOption, OffloadFolderOption
from hermes_policy.errors import HermesError
from hermes_policy.outputs import check_output

APP = Path(__file__).with_name("app.py")
#: addresses that bind every interface
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class DashboardError(HermesError):
    """The dashboard cannot start as asked."""


def streamlit_command(settings: Settings, host: str = "127.0.0.1", port: int = 8501,
                      python: str = sys.executable) -> list[str]:
    """The ``streamlit run`` command line: headless, no usage statistics, the app's own arguments after ``--``."""
    if not 0 < port < 65536:
        raise DashboardError(f"--port must be between 1 and 65535, got {port}")
    if not host.strip():
        raise DashboardError("--host must not be empty (the default, 127.0.0.1, serves this machine only)")
    # A named address keeps Streamlit from looking up this machine's external IP (it asks an outside
    # service when it binds every interface); for a wildcard bind the URL it prints names this host.
    shown = socket.gethostname() if host in WILDCARD_HOSTS else host
    return [
        python, "-m", "streamlit", "run", str(APP),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", shown,
        # the app's pages are modules of this package; file watching would only reload it mid-run
        "--server.fileWatcherType", "none",
        "--", *settings.to_args(),
    ]


def register(app: typer.Typer) -> None:
    """Add the ``dashboard`` subcommand to the ``hermes-lab`` app."""

    @app.command()
    def dashboard(
        study: Annotated[list[Path] | None, typer.Option(help="a recording directory to open; repeatable")] = None,
        port: Annotated[int, typer.Option(help="port to serve on")] = 8501,
        host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 exposes the app to your network")] =
        "127.0.0.1",
        model: Annotated[str, typer.Option(help="model selected at start (built-in name, HF id or path)")] =
        DEFAULT_MODEL,
        video: Annotated[str, typer.Option(help="video every page starts from (file or synthetic spec)")] =
        DEFAULT_VIDEO,
        runs: Annotated[Path, typer.Option(help="folder for recordings, uploads, specs and figures the app writes")] =
        Path(DEFAULT_RUNS),
        device_map: DeviceMapOption = None,
        max_memory: MaxMemoryOption = None,
        offload_folder: OffloadFolderOption = None,
        eval_dirs: Annotated[list[Path] | None, typer.Option(
            "--eval", help="an eval --out folder the Results page opens with; repeatable")] = None,
        bench_dirs: Annotated[list[Path] | None, typer.Option(
            "--bench", help="a bench --out folder the Results page opens with; repeatable")] = None,
        allow_pickle_weights: AllowPickleOption = False,
    ) -> None:
        """Open the dashboard: attention explorer, study & tiers, cache occupancy, live stream & ask, results."""
        from analysis.results_figures import read_bench, read_eval

        for folder in eval_dirs or ():
            read_eval(folder)  # a folder that is not a finished evaluation fails here, in one line
        for folder in bench_dirs or ():
            read_bench(folder)
        settings = Settings(tuple(str(s) for s in study or ()), model, video, str(runs), device_map, max_memory,
                            None if offload_folder is None else str(offload_folder),
                            tuple(str(e) for e in eval_dirs or ()), tuple(str(b) for b in bench_dirs or ()),
                            allow_pickle_weights)
        settings.placement()  # a bad device map fails here, in one line, not on every page
        check_output(runs, False, DashboardError, what="--runs", resumable=True)  # the app writes there
        cmd = streamlit_command(settings, host, port)
        if not is_loopback(host):
            typer.echo(f"WARNING: --host {host} serves the dashboard beyond this machine: anyone who can reach "
                       f"port {port} can load models, stream videos and write files under --runs {runs}. There is "
                       "no login. Use the default, 127.0.0.1, unless that is what you mean.", err=True)
        typer.echo(f"hermes-lab dashboard on http://{host}:{port} (Ctrl+C to stop)", err=True)
        sys.stdout.flush(), sys.stderr.flush()
        # become the server: signals (Ctrl+C, a supervisor's SIGTERM) reach Streamlit itself,
        # and no orphaned server outlives its command
        os.execv(cmd[0], cmd)


__all__ = ["DashboardError", "register", "streamlit_command"]
