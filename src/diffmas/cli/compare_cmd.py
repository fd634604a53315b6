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
    console.print(results_table(results, run_dir))
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


def report_command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="A compare run directory, or several: the same ladder run with different seeds."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where the seeds report (seeds.md, seeds.png) goes; required with several run dirs."
        ),
    ] = None,
    reference: Annotated[
        str,
        typer.Option(
            help="Rung the paired W/L and McNemar columns compare against: 'auto' (diffmas, else the last "
            "trained rung), a rung name, or 'none'."
        ),
    ] = "auto",
) -> None:
    """One dir: re-render its results.md and plots. Several: the seeds report into --out."""
    from diffmas.report import AUTO, render_report, render_seeds_report

    ref = None if reference.lower() == "none" else (AUTO if reference.lower() == "auto" else reference)
    if len(run_dirs) > 1 and out is None:
        console.print("[red]error:[/red] several run dirs make a seeds report: give --out DIR")
        raise typer.Exit(2)
    if len(run_dirs) == 1 and out is not None:
        console.print("[red]error:[/red] --out is for the seeds report of several run dirs")
        raise typer.Exit(2)
    try:
        if len(run_dirs) == 1:
            written = render_report(run_dirs[0], reference=ref)
        else:
            assert out is not None
            written = render_seeds_report(run_dirs, out, reference=ref)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    for kind, path in written.items():
        console.print(f"{kind}: {path}")
