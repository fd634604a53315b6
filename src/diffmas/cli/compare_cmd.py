"""`diffmas compare`, `diffmas demo` and `diffmas report`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()

QUICK = [
    "n_train=16",
    "n_test=16",
    "inference.max_new_tokens=24",
    "inference.upstream_max_new_tokens=24",
    "training.optim.steps=4",
]


def _run(cfg, run_dir: Path) -> None:
    from diffmas.compare import CompareRecipe
    from diffmas.report import results_table

    recipe = CompareRecipe(cfg, run_dir, console=console)
    recipe.setup()
    results = recipe.run()
    written = recipe.report()
    console.print()
    console.print(f"[bold]{cfg.name}[/bold]: {cfg.model} on {cfg.task}, {results['n_test']} test items")
    console.print(results_table(results))
    console.print(f"\ntable: {written['markdown']}\nplot:  {written['accuracy']}")


def _load(path: Path | str, overrides: list[str]):
    from pydantic import ValidationError

    from diffmas.compare import CompareConfig

    try:
        return CompareConfig.from_yaml(path, overrides)
    except ValidationError as e:
        console.print(f"[red]invalid config {path}:[/red]\n{e}")
        raise typer.Exit(2) from e
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


def compare_command(
    config: Annotated[Path, typer.Argument(help="A ladder config (YAML); see configs/.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. n_test=50")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default runs/<name>).")] = None,
) -> None:
    cfg = _load(config, overrides or [])
    _run(cfg, run_dir or Path("runs") / cfg.name)


def demo_command(
    model: Annotated[str | None, typer.Option(help="Backbone (default: the embedded SmolLM2-135M).")] = None,
    task: Annotated[str | None, typer.Option(help="Task (default: BIG-bench navigate).")] = None,
    quick: Annotated[
        bool, typer.Option(help="A few items and steps: a smoke run of the whole ladder.")
    ] = False,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/demo or runs/demo-quick).")
    ] = None,
) -> None:
    overrides = list(QUICK) if quick else []
    overrides += [f"model={model}"] if model else []
    overrides += [f"task={task}"] if task else []
    if quick:
        overrides.append("name=demo-quick")
    preset = resources.files("diffmas").joinpath("presets/demo.yaml")
    with resources.as_file(preset) as path:
        cfg = _load(path, overrides)
    _run(cfg, run_dir or Path("runs") / cfg.name)


def report_command(run_dir: Annotated[Path, typer.Argument(help="A compare run directory.")]) -> None:
    from diffmas.report import render_report

    try:
        written = render_report(run_dir)
    except FileNotFoundError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    for kind, path in written.items():
        console.print(f"{kind}: {path}")
