"""`diffmas compare`, `diffmas demo` and `diffmas report`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()

_QUICK = [
    "n_train=16",
    "n_test=16",
    "training.optim.steps=4",
    "training.optim.warmup_steps=1",
]  # a smoke run of the whole ladder
QUICK = _QUICK + ["training.method.oracle_warmup.start=1", "training.method.oracle_warmup.end=3"]
QUICK_PAPER = _QUICK + ["inference.max_new_tokens=24", "inference.upstream_max_new_tokens=24"]


def _run(cfg, run_dir: Path) -> None:
    from diffmas.compare import CompareRecipe
    from diffmas.tasks.pypi import DataFetchError

    recipe = CompareRecipe(cfg, run_dir, console=console)
    try:
        recipe.setup()
        results = recipe.run()
    except DataFetchError as e:  # e.g. BIG-bench without a local copy: one line that says how
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    written = recipe.report()
    console.print()
    console.print(f"[bold]{cfg.name}[/bold]: {cfg.model} on {cfg.task}, {results['n_test']} test items")
    console.print(terminal_table(results, run_dir))
    sentence = channel_sentence(results) if _splits_views(cfg) else None
    if sentence:
        console.print(f"\n{sentence}")
    console.print(
        f"\nfull table (perplexity, self-consistency, tokens, trace length): {written['markdown']}"
        f"\nplot: {written['accuracy']}"
    )


def terminal_table(results: dict, run_dir: Path):
    """The ladder's headline columns as a rich table that fits an 80-column terminal; results.md has them all."""
    from rich.table import Table

    from diffmas.report import AUTO, baselines, fmt_p, paired_vs_reference, reference_rung

    ref = reference_rung(results, run_dir, AUTO)
    paired = paired_vs_reference(results, run_dir, ref)[0] if ref is not None else {}
    base = baselines(results, run_dir, ref).line()
    # W/L names the reference in the title, not its header: a long rung name there would squeeze the method column
    title = f"W/L and McNemar p: each row against {ref} on the same items" if ref is not None else None
    table = Table(title=title, caption=base or None, caption_justify="left", title_justify="left")
    table.add_column("method", no_wrap=True)
    table.add_column("accuracy % [95% CI]", justify="right")
    if ref is not None:
        table.add_column("W/L", justify="right")
        table.add_column("McNemar p", justify="right")
    table.add_column("s/item", justify="right")
    for name, s in results["methods"].items():
        cells = [name, _accuracy(s)]
        if ref is not None:
            m = paired.get(name)
            if name == ref:
                cells += ["(reference)", ""]
            else:
                cells += [f"{m.wins}/{m.losses}", fmt_p(m.p_value)] if m is not None else ["–", "–"]
        seconds = s.get("mean_seconds")
        cells.append(f"{seconds:.2f}" if seconds is not None else "–")
        table.add_row(*cells)
    return table


def _accuracy(s: dict) -> str:
    cell = f"{100 * s['accuracy']:.1f}"
    if s.get("ci_low") is not None:
        cell += f" [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"
    return cell


# what each rung is, in the sentence under a communication ladder's table
_WORDS = {
    "single_sft": "the trained single agent that sees every view, the skyline",
    "text_mas_sft": "a trained reader of the few tokens the untrained sender writes",
    "text_mas": "the same text, reader untrained",
    "latent_mas": "the untrained chain",
    "latent_mas_latents": "the untrained chain in the same channel",
    "no_comm": "the Solver alone",
    "donor": "the trained Solver reading another question's trace",
    "donor_latents": "the trained Solver reading another question's latents",
    "latent_donor": "the trained Solver reading its own sender's prompt with another question's latents",
    "single": "one untrained agent that sees every view",
}
# the rungs each channel's sentence compares against, in order
_COMPARED = (
    "single_sft",
    "text_mas_sft",
    "text_mas",
    "latent_mas",
    "no_comm",
    "donor",
    "latent_donor",
    "single",
)
_COMPARED_LATENTS = ("single_sft", "text_mas_sft", "latent_mas_latents", "no_comm", "donor_latents")


def _splits_views(cfg) -> bool:
    """Whether the ladder's test items give the agents private views: only then is there a sender whose context
    a channel carries, and a sentence about it."""
    from diffmas.tasks import get_task

    items = get_task(cfg.task, **cfg.task_args).load(cfg.test_split)[: cfg.n_test]
    return any(item.views for item in items)


def channel_sentence(results: dict) -> str | None:
    """What a communication ladder shows, in words that name the channel: in `full` the trained Solver attends to
    the sender's prompt, so it reads the sender's context (no learned latent code is needed); only a `latents`
    rung (the Solver sees m latent columns per hop and nothing else) can show that the latents carry something."""
    m = results.get("methods", {})
    if "diffmas" not in m and "diffmas_latents" not in m:
        return None

    def pct(rung: str) -> str:
        return f"{100 * m[rung]['accuracy']:.0f}%"

    sentences = []
    if "diffmas" in m:
        others = ", ".join(f"{pct(r)} for {_WORDS[r]} ({r})" for r in _COMPARED if r in m)
        sentences.append(
            f"In the full channel the trained Solver reads the sender's context (its prompt and latents): diffmas "
            f"answered {pct('diffmas')} of the test items" + (f", against {others}" if others else "") + "."
        )
    chance = next((s.get("chance_rate") for s in m.values() if s.get("chance_rate") is not None), None)
    if "diffmas_latents" in m:
        others = ", ".join(f"{pct(r)} for {_WORDS[r]} ({r})" for r in _COMPARED_LATENTS if r in m)
        sentences.append(
            "In the latents-only channel the Solver sees the sender's latent columns and never its prompt: "
            f"diffmas_latents answered {pct('diffmas_latents')}"
            + (f", against {others}" if others else "")
            + "."
        )
        own, donor = m["diffmas_latents"], m.get("donor_latents")
        if (
            chance is not None
            and own.get("ci_low") is not None
            and own["ci_low"] > chance
            and donor is not None
            and donor["accuracy"] <= chance
        ):
            sentences.append(
                "Above chance with its own latents and not with another question's: the answer reaches the "
                "Solver through the latent columns."
            )
    else:
        sentences.append("No latents-only rung ran, so this does not show that the latents carry the answer.")
    if chance is not None:
        sentences.append(f"A uniform guess scores {100 * chance:.1f}%.")
    return " ".join(sentences)


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
    attn_implementation: Annotated[
        str | None, typer.Option(help="eager | sdpa | flash_attention_2 (default: transformers' choice).")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Task (default: secret, or gym:ransom_note with --paper).")
    ] = None,
    paper: Annotated[
        bool,
        typer.Option(
            help="The paper-style ladder (single, single_sft, text_mas, latent_mas, diffmas) on reasoning-gym ransom_note."
        ),
    ] = False,
    quick: Annotated[
        bool, typer.Option(help="A few items and steps: a smoke run of the whole ladder.")
    ] = False,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default runs/<preset name>).")] = None,
) -> None:
    """The communication demo (or, with --paper, the paper-style ladder) on the embedded SmolLM2-135M, offline."""
    overrides = (list(QUICK_PAPER) if paper else list(QUICK)) if quick else []
    overrides += [f"model={model}"] if model else []
    overrides += [f"attn_implementation={attn_implementation}"] if attn_implementation else []
    overrides += [f"task={task}"] if task else []
    preset = resources.files("diffmas").joinpath("presets/demo_paper.yaml" if paper else "presets/demo.yaml")
    with resources.as_file(preset) as path:
        cfg = _load(path, overrides)
    if quick:
        cfg = cfg.model_copy(update={"name": cfg.name + "-quick"})
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
