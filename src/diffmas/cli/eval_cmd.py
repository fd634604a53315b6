"""`diffmas eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from diffmas.cli.common import key_values, warn
from diffmas.configs import DEFAULT_MODEL, InferenceSpec, ModelFields, default_of

console = Console()


def _default(name: str) -> Any:
    """A flag's default shown in --help: the eval config's own (written once, in `diffmas.configs`)."""
    # EvalConfig's own fields (diffmas.evaluation imports torch, too heavy for --help; a test checks they agree)
    defaults = {"split": "test", "batch_size": 4, "group_by_length": True, "seed": 0}
    for spec in (InferenceSpec, ModelFields):
        if name in spec.model_fields:
            return default_of(spec, name)
    return defaults[name]


def eval_command(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Argument(
            help="An eval config (YAML of EvalConfig's fields: task, method, top_k, task_args, ...); optional.",
            metavar="CONFIG",
            show_default=False,
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value overrides over the config, e.g. top_k=20 task_args.agents=2; flags win over both.",
            metavar="KEY=VALUE",
            show_default=False,
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="A registered task name or a JSONL file with question/answer fields (or task: in the config).",
            show_default=False,
        ),
    ] = None,
    task_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE argument of the task, repeatable: agents=2, seed=3, path=FILE (a local copy of a hub "
            "dataset). Unset: those --adapter was trained with, on the task it was trained on."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Embedded name, local HF folder, GGUF file or hub id.")
    ] = DEFAULT_MODEL,
    method: Annotated[
        str | None,
        typer.Option(
            help="single | text_mas | latent_mas | stitch_mas | no_comm | donor | single_latent "
            "(default: latent_mas, or what --adapter was trained for)"
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Task split.")] = _default("split"),
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N items.")] = None,
    batch_size: Annotated[
        str,
        typer.Option(
            help="Questions per batch, or auto: the largest batch whose KV caches fit --kv-budget-gib "
            "(on CUDA, unset: 60% of the free memory)."
        ),
    ] = str(_default("batch_size")),
    kv_budget_gib: Annotated[
        float | None, typer.Option(help="KV-cache memory for --batch-size auto, in GiB.")
    ] = None,
    group_by_length: Annotated[
        bool,
        typer.Option(
            help="Batch questions of like length, longest first (fewer pads; answers unchanged, rows reordered)."
        ),
    ] = _default("group_by_length"),
    latent_steps: Annotated[
        int | None,
        typer.Option(
            help=f"Latent steps per upstream agent (default: {_default('latent_steps')}, or --adapter's)."
        ),
    ] = None,
    realign: Annotated[
        str | None,
        typer.Option(help=f"norm | ridge | learned | soft (default: {_default('realign')}, or --adapter's)"),
    ] = None,
    seed: Annotated[int, typer.Option()] = _default("seed"),
    max_new_tokens: Annotated[
        int | None, typer.Option(help=f"Solver's answer budget (default: {_default('max_new_tokens')}).")
    ] = None,
    upstream_max_new_tokens: Annotated[
        int | None,
        typer.Option(
            help=f"Each upstream agent's text budget (text_mas) (default: {_default('upstream_max_new_tokens')})."
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = _default("temperature"),
    top_p: Annotated[float, typer.Option()] = _default("top_p"),
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
    ] = _default("samples"),
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = _default("dtype"),
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = _default("device"),
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
            help=f"full | latents: what later agents read of the trace (default: {_default('channel')}, or --adapter's)"
        ),
    ] = None,
    static_cache: Annotated[
        bool,
        typer.Option(
            help="Decode every answer on a cache of fixed shape with compacted KV (same greedy answers)."
        ),
    ] = _default("static_cache"),
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

    flags = {
        "task": task, "task_args": key_values(task_arg, "--task-arg"), "model": model, "method": method,
        "split": split, "limit": limit, "batch_size": batch_size, "kv_budget_gib": kv_budget_gib,
        "group_by_length": group_by_length, "latent_steps": latent_steps, "realign": realign, "seed": seed,
        "max_new_tokens": max_new_tokens, "upstream_max_new_tokens": upstream_max_new_tokens,
        "temperature": temperature, "top_p": top_p, "top_k": top_k,
        "chat_template_kwargs": key_values(template_arg, "--template-arg"), "samples": samples, "dtype": dtype,
        "device": device, "attn_implementation": attn_implementation, "adapter": adapter, "roles": roles,
        "channel": channel, "static_cache": static_cache, "compile": compile_mode, "out": out,
    }  # fmt: skip
    try:
        settings = eval_settings(config, overrides or [], given_flags(ctx, flags))
    except (FileNotFoundError, ValueError) as e:
        fail(console, e)
    task = settings.get("task")
    if not task:
        fail(console, "no task: pass --task NAME, task=NAME, or task: in the config file")
    adapter = Path(settings["adapter"]) if settings.get("adapter") else None
    device = str(settings.get("device", _default("device")))
    compile_mode, static_cache = settings.get("compile"), bool(settings.get("static_cache"))
    try:  # unset settings take the adapter's manifest (then the defaults); a contradicting one is an error
        trained = resolve_adapter_settings(
            str(adapter) if adapter else None,
            {k: settings.get(k) for k in ("method", "latent_steps", "realign", "channel")}
            | {"roles": _roles_spec(settings.get("roles"))},
        )
        task_args = _task_args(task, settings.get("task_args") or {}, adapter)
        check_task_args(task, task_args)
        check_compile_device(compile_mode, device)
    except (FileNotFoundError, ValueError) as e:
        fail(console, e)
    out = Path(settings["out"]) if settings.get("out") else default_out(task, trained["method"])
    try:  # settings left unset take EvalConfig's defaults (diffmas.configs: one place for them)
        cfg = EvalConfig.model_validate(
            {**settings, "task_args": task_args, "adapter": str(adapter) if adapter else None, "out": str(out),
             **trained}
        )  # fmt: skip
    except ValidationError as e:
        fail(console, e, label=f"invalid {'config ' + config if config else 'options'}")
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


def eval_settings(config: str | None, overrides: list[str], flags: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's settings as given: the config file's, then the `key=value` overrides, then the flags given on
    the command line (a flag's `--task-arg`/`--template-arg` keys join the file's mapping). `config` may itself be an
    override when there is no file (`diffmas eval task=arith top_k=5`)."""
    from diffmas.configs import apply_overrides, deep_merge, read_yaml

    if config is not None and "=" in config and not Path(config).is_file():
        overrides = [config, *overrides]
        config = None
    data = read_yaml(config) if config is not None else {}
    data = apply_overrides(data, overrides)
    return deep_merge(data, {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()})


def given_flags(ctx: typer.Context, flags: dict[str, Any]) -> dict[str, Any]:
    """The flags the command line set (not those at their default), by setting name. A repeatable `KEY=VALUE` flag
    counts when it holds a key."""
    param = {"compile": "compile_mode", "task_args": "task_arg", "chat_template_kwargs": "template_arg"}
    out = {}
    for name, value in flags.items():
        source = ctx.get_parameter_source(param.get(name, name))
        # by name: typer ships its own copy of click's ParameterSource
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP") and value != {}:
            out[name] = value
    return out


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
