"""`diffmas lm-eval ARGS`: lm-evaluation-harness's command line with the `diffmas` model (docs/lm_eval.md)."""

from __future__ import annotations

import typer
from rich.console import Console

from diffmas.cli.common import fail

console = Console()


def lm_eval_command(ctx: typer.Context) -> None:
    """Every argument goes to lm-eval as it is; `--model diffmas` is implied
    (e.g. --model_args adapter=DIR --tasks TASK --include_path TASKS_DIR)."""
    try:
        from diffmas.lm_eval_model import main
    except ImportError as e:
        fail(console, f"diffmas lm-eval needs lm-evaluation-harness: pip install 'diffmas[lm-eval]' ({e})")
    main(list(ctx.args))
