"""`diffmas eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from diffmas.cli.common import key_values, warn

console = Console()


def eval_command(
    task: Annotated[
        str, typer.Option(help="A registered task name or a JSONL file with question/answer fields.")
    ],
    task_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE argument of the task, repeatable: agents=2, seed=3, path=FILE (a local copy of a hub "
            "dataset). Unset: those --adapter was trained with, on the task it was trained on."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Embedded name, local HF folder, GGUF file or hub id.")
    ] = "smollm2-135m",
    method: Annotated[
        str | None,
        typer.Option(
            help="single | text_mas | latent_mas | stitch_mas | no_comm | donor | single_latent "
            "(default: latent_mas, or what --adapter was trained for)"
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Task split.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N items.")] = None,
    batch_size: Annotated[
        str,
        typer.Option(
            help="Questions per batch, or auto: the largest batch whose KV caches fit --kv-budget-gib "
            "(on CUDA, unset: 60% of the free memory)."
        ),
    ] = "4",
    kv_budget_gib: Annotated[
        float | None, typer.Option(help="KV-cache memory for --batch-size auto, in GiB.")
    ] = None,
    group_by_length: Annotated[
        bool,
        typer.Option(
            help="Batch questions of like length, longest first (fewer pads; answers unchanged, rows reordered)."
        ),
    ] = True,
    latent_steps: Annotated[
        int | None, typer.Option(help="Latent steps per upstream agent (default: 10, or --adapter's).")
    ] = None,
    realign: Annotated[
        str | None, typer.Option(help="norm | ridge | learned | soft (default: ridge, or --adapter's)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    max_new_tokens: Annotated[int | None, typer.Option(help="Solver's answer budget (default: 256).")] = None,
    upstream_max_new_tokens: Annotated[
        int | None, typer.Option(help="Each upstream agent's text budget (text_mas) (default: 256).")
    ] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option()] = 0.95,
    top_k: Annotated[
        int | None, typer.Option(help="Sample among the k likeliest tokens (Qwen3: 20).")
    ] = None,
    template_arg: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE for the chat template, repeatable (Qwen3: enable_thinking=true)."),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            help="N > 1: N sampled answers per item besides the main one, for self-consistency (at T=0.6 "
            "when --temperature is 0); 1: none."
        ),
    ] = 1,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu",
    attn_implementation: Annotated[
        str | None,
        typer.Option(help="eager | sdpa | flash_attention_2 (default: transformers' choice for the model)"),
    ] = None,
    adapter: Annotated[Path | None, typer.Option(help="A trained adapter directory (diffmas train).")] = None,
    roles: Annotated[
        str | None,
        typer.Option(help="A packaged chain (default, comm, comm2, comm3) or a YAML file of roles."),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(
            help="full | latents: what later agents read of the trace (default: full, or --adapter's)"
        ),
    ] = None,
    static_cache: Annotated[
        bool,
        typer.Option(
            help="Decode every answer on a cache of fixed shape with compacted KV (same greedy answers)."
        ),
    ] = False,
    compile_mode: Annotated[
        str | None,
        typer.Option(
            "--compile",
            help="default | reduce-overhead (CUDA graphs) | max-autotune: torch.compile the static answer's step.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: runs/eval/<task>/<method>).")
    ] = None,
) -> None:
    from pydantic import ValidationError

    from diffmas.cli.common import check_task_args, dataset_hint, fail
    from diffmas.evaluation import EvalConfig, resolve_adapter_settings, run_eval
    from diffmas.grading.sandbox import SandboxUnavailable
    from diffmas.tasks.hub import DatasetUnavailable
    from diffmas.tasks.pypi import DataFetchError
    from diffmas.terminal import LazyProgress

    try:  # unset flags take the adapter's manifest (then the defaults); a contradicting flag is an error
        trained = resolve_adapter_settings(
            str(adapter) if adapter else None,
            dict(
                method=method,
                latent_steps=latent_steps,
                realign=realign,
                channel=channel,
                roles=_roles_spec(roles),
            ),
        )
        task_args = _task_args(task, key_values(task_arg, "--task-arg"), adapter)
        check_task_args(task, task_args)
        check_compile_device(compile_mode, device)
    except (FileNotFoundError, ValueError) as e:
        fail(console, e)
    out = out if out is not None else default_out(task, trained["method"])
    try:
        budgets = dict(max_new_tokens=max_new_tokens, upstream_max_new_tokens=upstream_max_new_tokens)
        cfg = EvalConfig(  # unset budgets take EvalConfig's defaults (diffmas.configs: one place for them)
            model=model, task=task, task_args=task_args, split=split, limit=limit, batch_size=batch_size,
            kv_budget_gib=kv_budget_gib, group_by_length=group_by_length, seed=seed, temperature=temperature,
            top_p=top_p, top_k=top_k, chat_template_kwargs=key_values(template_arg, "--template-arg"),
            samples=samples, dtype=dtype, device=device, attn_implementation=attn_implementation,
            static_cache=static_cache, compile=compile_mode, adapter=str(adapter) if adapter else None,
            out=str(out), **{k: v for k, v in budgets.items() if v is not None}, **trained,
        )  # fmt: skip
    except ValidationError as e:
        fail(console, e, label="invalid options")
    if compile_mode is not None and _device_type(device) == "cpu":
        warn(
            console, f"--compile {compile_mode} on CPU: the first batch waits while torch compiles (minutes)"
        )
    elif static_cache and _device_type(device) == "cpu":
        warn(
            console,
            "--static-cache without --compile is no faster than the default loop (docs/performance.md)",
        )
    with LazyProgress(console, f"[bold]{cfg.method}[/bold] on {task}") as progress:  # drawn at item one
        try:
            summary = run_eval(cfg, progress=progress)
        except DatasetUnavailable as e:
            fail(console, dataset_hint(e, "--task-arg path=FILE"), code=1)
        except (FileNotFoundError, ValueError, SandboxUnavailable, DataFetchError) as e:
            fail(console, e, code=1)
    console.print(
        f"[bold]{summary['method']}[/bold] on {summary['task']}: accuracy {summary['accuracy']:.3f} "
        f"[{summary['ci_low']:.3f}, {summary['ci_high']:.3f}] (n={summary['n']}), "
        f"{summary.get('mean_generated_tokens', 0):.1f} generated tokens/item, {summary.get('mean_seconds', 0):.2f} s/item"
    )
    console.print(f"wrote {out / 'samples.jsonl'} and {out / 'summary.json'}")


def default_out(task: str, method: str) -> Path:
    """`runs/eval/<task>/<method>`: one folder per task and method, so a second evaluation on another task does not
    meet the first one's results (a folder of a different evaluation is refused, naming --out). A task file is
    named by its stem."""
    import re

    from diffmas.tasks.jsonl import TASK_FILE_SUFFIXES

    path = Path(task)
    name = path.stem if path.suffix.lower() in TASK_FILE_SUFFIXES else task
    return Path("runs") / "eval" / re.sub(r"[^A-Za-z0-9._=+-]+", "-", name).strip("-.") / method


def _task_args(task: str, given: dict[str, Any], adapter: Path | None) -> dict[str, Any]:
    """The task's arguments: those given, over the ones the adapter was trained with when it was trained on this
    same task (an adapter trained on `secret` with 2 agents is evaluated on 2 agents without a flag)."""
    if adapter is None:
        return given
    from diffmas.adapters import MANIFEST_FILE

    manifest_file = Path(adapter) / MANIFEST_FILE
    if not manifest_file.is_file():
        return given
    data = json.loads(manifest_file.read_text(encoding="utf-8")).get("config", {}).get("data", {})
    trained = data.get("task_args") or {}
    if data.get("task") != task or not trained:
        return given
    merged = {**trained, **given}
    console.print(f"task arguments from {adapter}: {', '.join(f'{k}={v}' for k, v in merged.items())}")
    return merged


def _device_type(device: str) -> str:
    """`cpu` or `cuda` as `--device` resolves (auto: cuda when available), without touching CUDA otherwise."""
    if device.lower() == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.lower().split(":")[0]


def check_compile_device(compile_mode: str | None, device: str) -> None:
    """`reduce-overhead` records CUDA graphs: on a CPU it compiled for minutes, silent, to no use. Refused there."""
    if compile_mode == "reduce-overhead" and _device_type(device) == "cpu":
        raise ValueError(
            "--compile reduce-overhead records CUDA graphs and needs --device cuda; on CPU use --compile default "
            "(or leave --compile out)"
        )


def _roles_spec(roles: str | None) -> str | None:
    """A packaged chain name as it is; a path normalised (so `./x.yaml` and `x.yaml` resume the same run)."""
    from diffmas.roles import PACKAGED_CHAINS

    return roles if roles is None or roles in PACKAGED_CHAINS else str(Path(roles))
