"""The `diffmas` command line. Each command lives in its own module; heavy imports happen inside commands."""

from __future__ import annotations

import typer

from diffmas.cli.bench_cmd import bench_command
from diffmas.cli.compare_cmd import compare_command, demo_command, report_command
from diffmas.cli.diagnose_cmd import diagnose_app
from diffmas.cli.eval_cmd import eval_command
from diffmas.cli.lm_eval_cmd import lm_eval_command
from diffmas.cli.paired_cmd import paired_command
from diffmas.cli.train_cmd import train_command

app = typer.Typer(
    name="diffmas",
    help="Multi-agent LLMs that communicate through a shared KV cache, trained end to end with LoRA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        import platform

        from diffmas import __version__

        typer.echo(f"diffmas {__version__} (Python {platform.python_version()})")
        raise typer.Exit()


# The root's flags, which `main` also takes after the subcommand (click reads a group's options before it only).
GLOBAL_FLAGS = ("--weak-sandbox", "--verbose", "--version")


@app.callback()
def _root(
    weak_sandbox: bool = typer.Option(
        False,
        "--weak-sandbox",
        help="Grade code in the weaker sandbox where this machine lacks a kernel layer (docs/sandbox.md). "
        "Weak-mode verdicts can be forged by a hostile program: use it for trusted code only.",
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="Also show the libraries' progress bars, logs and deprecation warnings."
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    """Multi-agent LLMs that communicate through a shared KV cache, trained end to end with LoRA."""
    if not verbose:
        from diffmas.terminal import quiet_libraries

        quiet_libraries()
    if weak_sandbox:
        import os

        os.environ["DIFFMAS_SANDBOX"] = "weak"


app.command("eval", help="Run one method on one task; write samples.jsonl and summary.json.")(eval_command)

app.command("train", help="Train DiffMAS (or a trained baseline) from a YAML config.")(train_command)
app.command("compare", help="Train and evaluate the ladder of methods on one task; write results and plots.")(
    compare_command
)
app.command(
    "demo",
    help="Can a trained Solver use what another agent holds? A communication ladder on the embedded SmolLM2, in "
    "the full channel (the Solver reads the sender's context) (--paper: the paper-style ladder).",
)(demo_command)
app.command(
    "report",
    help="Re-render results.md and the plots of a compare run directory; with several, the seeds report.",
)(report_command)

app.command(
    "paired", help="Compare two eval runs on the same items: wins/losses and the exact McNemar test."
)(paired_command)
app.command("bench", help="Run the B1-B5 benchmarks of bench/ (a source checkout) and print one table.")(
    bench_command
)
app.command(
    "lm-eval",
    help="Run lm-evaluation-harness on a DiffMAS system: lm-eval's own flags, --model diffmas implied "
    "(docs/lm_eval.md).",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)(lm_eval_command)

app.add_typer(diagnose_app, name="diagnose", help="Diagnostics of the latent channel (docs/diagnostics.md).")

try:  # registered when the tasks module of the CLI is present
    from diffmas.cli.tasks_cmd import tasks_command

    app.command("tasks", help="List every registered task with its source, size and answer type.")(
        tasks_command
    )
except ImportError:  # pragma: no cover
    pass


def hoist_global_flags(argv: list[str]) -> list[str]:
    """`diffmas eval ... --verbose` as `diffmas --verbose eval ...`: the root's flags move before the subcommand
    wherever they stand (not after a `--`, which ends the options)."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[:end] if a not in GLOBAL_FLAGS]
    return flags + rest + argv[end:]


def main(argv: list[str] | None = None) -> None:
    import sys

    app(args=hoist_global_flags(list(sys.argv[1:] if argv is None else argv)), prog_name="diffmas")


if __name__ == "__main__":
    main()
