"""`diffmas train CONFIG.yaml [key=value ...]`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def train_command(
    config: Annotated[Path, typer.Argument(help="A training config (YAML); see configs/train_*.yaml.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted overrides, e.g. optim.lr=1e-4")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue from the latest checkpoint in run.out; with a larger optim.steps, train a finished "
            "run further (docs/configs.md)."
        ),
    ] = False,
) -> None:
    from pydantic import ValidationError

    from diffmas.cli.common import check_task_args, dataset_hint, fail, warn
    from diffmas.tasks.hub import DatasetUnavailable
    from diffmas.tasks.pypi import DataFetchError
    from diffmas.training import DiffMASTrainer, NonFiniteLossError, TrainConfig
    from diffmas.training.config import ConfigDeprecationWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConfigDeprecationWarning)
            cfg = TrainConfig.from_yaml(config, overrides or [])
        for w in caught:
            if issubclass(w.category, ConfigDeprecationWarning):
                warn(console, f"{config}: {w.message}")
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        check_task_args(cfg.data.task, cfg.data.task_args, where=f"data.task_args of {config}")
    except ValidationError as e:
        console.print(f"[red]invalid config {config}:[/red]\n{e}")
        raise typer.Exit(2) from e
    except (FileNotFoundError, ValueError) as e:
        fail(console, e)
    trainer = DiffMASTrainer(cfg, console=console)
    try:
        trainer.setup(resume=resume)
        result = trainer.train(resume=resume)
    except DatasetUnavailable as e:
        fail(console, dataset_hint(e, "data.task_args.path=FILE"))
    except (FileNotFoundError, ValueError, DataFetchError) as e:
        fail(console, e)
    except NonFiniteLossError as e:
        console.print(f"[red]stopped:[/red] {e}")
        raise typer.Exit(1) from e
    if "adapter" in result:
        console.print(f"adapter: {result['adapter']}")
    if "eval" in result:
        console.print(
            f"held-out accuracy: {result['eval']['eval_accuracy']:.3f} (n={result['eval']['eval_n']})"
        )
