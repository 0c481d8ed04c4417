"""Entry point of the ``hermes-lab`` console script.

Each package owns its subcommands and registers them here; this module only
composes them and turns user errors (:class:`HermesError`) into one clear
line on stderr and exit status 2, instead of a traceback; so are the OS's refusals
to store a file (disk full, quota, read-only, permission). Usage errors are
click's own (exit status 2 with the usage line).
"""

from __future__ import annotations

import sys

import typer

from analysis import cli as analysis_cli
from analysis.summary import write_study_report
from analysis.training_curves import plot_curve
from dashboard import cli as dashboard_cli
from hermes_policy import __version__
from hermes_policy import cli as policy_cli
from hermes_policy.atomic import STORAGE_ERRNOS
from hermes_policy.data import cli as data_cli
from hermes_policy.errors import HermesError
from hermes_policy.eval import cli as eval_cli
from hermes_policy.outputs import release_output_locks
from hermes_policy.training import cli as training_cli
from probes import cli as probes_cli

app = typer.Typer(
    name="hermes-lab",
    help="Study and build KV-cache memory for streaming-video LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hermes-lab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="print the version and exit", is_eager=True, callback=_print_version
    ),
) -> None:
    """Study and build KV-cache memory for streaming-video LLMs."""


policy_cli.register(app)
# the runtime may not import analysis, so the curve plotter is handed in here, where both meet
training_cli.register(app, plot_curve=plot_curve)
# likewise the study's summary and figures: probes record, analysis reads
probes_cli.register(app, report=write_study_report)
analysis_cli.register(app)
data_cli.register(app)
eval_cli.register(app)
dashboard_cli.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status instead of raising for user errors."""
    try:
        app(args=argv, prog_name="hermes-lab")
    except HermesError as e:
        print(f"hermes-lab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # the machine refused to store or open something (a full disk, a quota, a read-only or forbidden
        # place) somewhere no check could foresee it: that is the user's to fix, so one line, not a traceback
        if e.errno not in STORAGE_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"hermes-lab: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        release_output_locks()  # the command's output folders are free for the next run
    return 0


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
