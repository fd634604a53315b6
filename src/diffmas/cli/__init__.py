"""The `diffmas` command line. Each command lives in its own module; heavy imports happen inside commands."""

from __future__ import annotations

import typer

from diffmas.cli.eval_cmd import eval_command

app = typer.Typer(
    name="diffmas",
    help="Multi-agent LLMs that communicate through a shared KV cache, trained end to end with LoRA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Multi-agent LLMs that communicate through a shared KV cache, trained end to end with LoRA."""


app.command("eval", help="Run one method on one task; write samples.jsonl and summary.json.")(eval_command)

try:  # registered when the tasks module of the CLI is present
    from diffmas.cli.tasks_cmd import tasks_command

    app.command("tasks", help="List every registered task with its source, size and answer type.")(
        tasks_command
    )
except ImportError:  # pragma: no cover
    pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
