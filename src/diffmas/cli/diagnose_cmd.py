"""`diffmas diagnose <name>`: the latent channel's diagnostics (docs/diagnostics.md), each printing its figure with
the chance rate beside every accuracy. `--model tiny` runs on the in-process tiny model (no download)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

diagnose_app = typer.Typer(
    help="Diagnostics of the latent channel: oracle, probe, attention, donor, readout, grad (docs/diagnostics.md).",
    no_args_is_help=True,
)

Model = Annotated[
    str, typer.Option(help="Embedded name, local HF folder or hub id; `tiny`: the in-process model.")
]
TaskName = Annotated[str, typer.Option(help="A registered task (a communication task: secret, relay, ...).")]
Seed = Annotated[int, typer.Option(help="Seeds the donor's derangement, the probe's shuffle and training.")]
Agents = Annotated[int, typer.Option(help="Agents of the chain (the task is built with them).")]
Steps = Annotated[int, typer.Option("--latent-steps", help="Latent steps per upstream agent.")]
Realign = Annotated[str, typer.Option(help="norm | ridge | learned | soft")]
Channel = Annotated[str, typer.Option(help="full | latents")]
Roles = Annotated[
    str | None,
    typer.Option(help="Role chain (packaged name or YAML) [default: comm2/comm3/comm by --agents]."),
]
Adapter = Annotated[
    Path | None,
    typer.Option(help="A trained adapter directory (the trained writer and reader) [default: none]."),
]
Device = Annotated[str, typer.Option(help="cpu, cuda, ...")]
BatchSize = Annotated[int, typer.Option(help="Items per forward.")]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


@contextmanager
def _method(model, task_name, agents, roles, steps, realign, channel, seed, adapter, device, attn=None):
    from diffmas.diagnostics.common import Setting, chain_for, load_model, load_task, method_with

    try:
        task = load_task(task_name, agents)
        chain = chain_for(agents, roles)
        setting = Setting(channel=channel, latent_steps=steps, realign=realign, seed=seed)
        setting.check()
        backbone = load_model(model, attn_implementation=attn, device=device)
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    with method_with(backbone, chain, task, setting, adapter) as method:
        yield method, task


def _header(what: str, model: str, task: str, channel: str, steps: int, realign: str, adapter) -> None:
    writer = f"adapter {adapter}" if adapter else "untrained"
    typer.echo(f"{what}: {model} on {task}, channel {channel}, {steps} latent steps, {realign}, {writer}")


@diagnose_app.command("probe")
def probe_command(
    model: Model = "smollm2-135m",
    task: TaskName = "secret",
    n: Annotated[int, typer.Option(help="Test items the probe is scored on.")] = 200,
    n_train: Annotated[int, typer.Option(help="Training items the probe is fitted on.")] = 400,
    seed: Seed = 0,
    agents: Agents = 2,
    latent_steps: Steps = 2,
    realign: Realign = "ridge",
    channel: Channel = "latents",
    roles: Roles = None,
    adapter: Adapter = None,
    batch_size: BatchSize = 16,
    device: Device = "cpu",
) -> None:
    """A linear probe per layer on the latent columns' keys and values: is the answer there for a reader?"""
    from diffmas.diagnostics.probe import probe_latents

    with _method(model, task, agents, roles, latent_steps, realign, channel, seed, adapter, device) as (m, t):
        train, test = t.load("train")[:n_train], t.load("test")[:n]
        result = probe_latents(m, t, train, test, batch_size=batch_size, seed=seed)
    _header("probe", model, task, channel, latent_steps, realign, adapter)
    typer.echo(
        f"{result.n_train} train / {result.n_test} test items, {result.classes} labels: "
        f"chance {_pct(result.chance)}, majority {_pct(result.majority)}"
    )
    opts = result.option_chance is not None
    if opts:
        typer.echo(
            f"among each item's options (the probe's best option; a uniform pick scores "
            f"{_pct(result.option_chance)}): keys(opt), values(opt)"
        )
    head = f"{'layer':>5}  {'keys':>6}  {'values':>6}  {'keys(shuf)':>10}  {'values(shuf)':>12}  chance"
    typer.echo(head + (f"  {'keys(opt)':>9}  {'values(opt)':>11}" if opts else ""))
    for r in result.rows:
        line = (
            f"{r.layer:>5}  {_pct(r.keys):>6}  {_pct(r.values):>6}  {_pct(r.keys_shuffled):>10}  "
            f"{_pct(r.values_shuffled):>12}  {_pct(result.chance)}"
        )
        if opts:
            line += f"  {_pct(r.keys_options):>9}  {_pct(r.values_options):>11}"
        typer.echo(line)


@diagnose_app.command("attention")
def attention_command(
    model: Model = "smollm2-135m",
    task: TaskName = "secret",
    n: Annotated[int, typer.Option(help="Test items.")] = 50,
    seed: Seed = 0,
    agents: Agents = 2,
    latent_steps: Steps = 2,
    realign: Realign = "ridge",
    channel: Channel = "latents",
    roles: Roles = None,
    adapter: Adapter = None,
    batch_size: BatchSize = 8,
    device: Device = "cpu",
) -> None:
    """The Solver's attention mass on the latent columns at its answer positions, per layer (eager attention)."""
    from diffmas.diagnostics.attention import attention_mass
    from diffmas.diagnostics.common import chance

    with _method(
        model, task, agents, roles, latent_steps, realign, channel, seed, adapter, device, attn="eager"
    ) as (m, t):
        items = t.load("test")[:n]
        rows = attention_mass(m, t, items, batch_size=batch_size)
    _header("attention mass", model, task, channel, latent_steps, realign, adapter)
    typer.echo(
        f"{len(items)} test items; the Solver's mean attention at the positions that predict its reference "
        f"answer (no accuracy here; the task's chance rate is {_pct(chance(t, items))})"
    )
    typer.echo(f"{'layer':>5}  {'latent':>7}  {'uniform':>7}  {'1st col':>7}  {'upstream':>8}  {'own':>6}")
    for r in rows:
        typer.echo(
            f"{r.layer:>5}  {_pct(r.latent):>7}  {_pct(r.uniform_latent):>7}  {_pct(r.latent_first):>7}  "
            f"{_pct(r.upstream_prompt):>8}  {_pct(r.own):>6}"
        )
    mean = sum(r.latent for r in rows) / len(rows)
    typer.echo(
        f"mean over layers: latent {_pct(mean)} (uniform {_pct(sum(r.uniform_latent for r in rows) / len(rows))})"
    )


@diagnose_app.command("donor")
def donor_command(
    model: Model = "smollm2-135m",
    task: TaskName = "secret",
    n: Annotated[int, typer.Option(help="Test items.")] = 200,
    seed: Seed = 0,
    agents: Agents = 2,
    latent_steps: Steps = 2,
    realign: Realign = "ridge",
    channel: Channel = "latents",
    roles: Roles = None,
    adapter: Adapter = None,
    batch_size: BatchSize = 8,
    max_new_tokens: Annotated[int, typer.Option(help="The Solver's answer budget.")] = 14,
    device: Device = "cpu",
) -> None:
    """The Solver with its own prompts reads another item's latent columns: accuracy paired against its own."""
    from dataclasses import replace

    from diffmas.diagnostics.donor import latent_donor

    with _method(model, task, agents, roles, latent_steps, realign, channel, seed, adapter, device) as (m, t):
        m.config = replace(m.config, max_new_tokens=max_new_tokens)
        result = latent_donor(m, t, t.load("test")[:n], batch_size=batch_size, seed=seed)
    _header("latent donor", model, task, channel, latent_steps, realign, adapter)
    c = _pct(result.chance)
    typer.echo(f"{len(result.real)} test items, chance {c}")
    typer.echo(f"own latents          {_pct(result.accuracy):>6}  (chance {c})")
    typer.echo(f"donor's latents      {_pct(result.transplanted_accuracy):>6}  (chance {c})")
    typer.echo(f"answers the donor's  {_pct(result.follows_donor_rate):>6}  (graded against the donor item)")
    s = result.test
    typer.echo(
        f"paired (exact McNemar): own right/donor wrong {s.wins}, own wrong/donor right {s.losses}, "
        f"p = {s.p_value:.3g}"
    )


@diagnose_app.command("readout")
def readout_command(
    model: Model = "smollm2-135m",
    task: TaskName = "secret",
    n: Annotated[int, typer.Option(help="Test items.")] = 200,
    seed: Seed = 0,
    agents: Agents = 2,
    latent_steps: Steps = 2,
    realign: Realign = "ridge",
    roles: Roles = None,
    adapter: Adapter = None,
    batch_size: BatchSize = 16,
    device: Device = "cpu",
) -> None:
    """The writers' top token at each latent step (the LM head on the state their realigner is fed): how often it
    opens the item's answer."""
    from diffmas.diagnostics.common import chance
    from diffmas.diagnostics.readout import latent_readout

    with _method(model, task, agents, roles, latent_steps, realign, "latents", seed, adapter, device) as (
        m,
        t,
    ):
        items = t.load("test")[:n]
        try:
            result = latent_readout(m, t, items, batch_size=batch_size)
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
    _header("readout", model, task, "latents", latent_steps, realign, adapter)
    typer.echo(
        f"{result.n} test items; a step's top token opens the answer (chance of naming it among the options: "
        f"{_pct(chance(t, items))})"
    )
    typer.echo(f"{'step':>4}  {'answer':>7}")
    for k, rate in enumerate(result.answer_rate):
        typer.echo(f"{k:>4}  {_pct(rate):>7}")
    typer.echo(f"any step: {_pct(result.any_rate)}; most common top tokens: {result.common}")


@diagnose_app.command("grad")
def grad_command(
    model: Model = "smollm2-135m",
    task: TaskName = "secret",
    n: Annotated[int, typer.Option(help="Training items in the one batch.")] = 4,
    seed: Seed = 0,
    agents: Agents = 2,
    latent_steps: Steps = 2,
    realign: Realign = "ridge",
    channel: Channel = "latents",
    roles: Roles = None,
    device: Device = "cpu",
) -> None:
    """Fresh per-role LoRA adapters, one backward of the training loss: the writer's and the reader's gradient
    norms, and the same with the trace built without grad (the writer must then get none)."""
    import torch

    from diffmas.adapters import ModelState, add_lora, unload_lora
    from diffmas.configs import LoraSpec
    from diffmas.diagnostics.common import Setting, chain_for, load_model, load_task, make_method
    from diffmas.diagnostics.gradient import writer_gradient

    torch.manual_seed(seed)
    try:
        t = load_task(task, agents)
        chain = chain_for(agents, roles)
        backbone = load_model(model, device=device)
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    state = ModelState.of(backbone.model)
    wrapped, hook = add_lora(backbone, LoraSpec(), "per_role", [r.name for r in chain.roles])
    setting = Setting(channel=channel, latent_steps=latent_steps, realign=realign, seed=seed)
    method = make_method(wrapped, chain, t, setting, role_hook=hook)
    items = t.load("train")[:n]
    try:
        full = writer_gradient(method, t, items, grad_mode="full")
        cut = writer_gradient(method, t, items, grad_mode="solver")
    finally:
        unload_lora(wrapped.model, state)
    _header("writer gradient", model, task, channel, latent_steps, realign, None)
    typer.echo(f"{len(items)} training items, per-role LoRA adapters at initialisation (no accuracy here)")
    for label, g in (("grad_mode full", full), ("grad_mode solver (control)", cut)):
        typer.echo(
            f"{label:<27} writer |g| {g['grad_norm_writer']:.4g}  reader |g| {g['grad_norm_reader']:.4g}  "
            f"loss {g['loss']:.4g}"
        )


@diagnose_app.command("oracle")
def oracle_command(
    model: Model = "smollm2-135m",
    task: TaskName = "secret",
    n: Annotated[int, typer.Option(help="Test items evaluated before and after training.")] = 48,
    seed: Seed = 0,
    agents: Agents = 2,
    latent_steps: Steps = 2,
    channel: Channel = "latents",
    roles: Roles = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps of the Solver's training.")] = 60,
    batch_size: BatchSize = 4,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    max_new_tokens: Annotated[int, typer.Option(help="The Solver's answer budget.")] = 14,
    out: Annotated[Path | None, typer.Option(help="Run directory [default: a temporary one].")] = None,
    device: Device = "cpu",
) -> None:
    """The writer's latent slots hold the answer's token embeddings; the Solver is trained alone to read them."""
    import tempfile

    from diffmas.diagnostics.common import (
        Setting,
        chain_for,
        chain_name,
        load_model,
        load_task,
        make_method,
        task_args,
    )
    from diffmas.diagnostics.oracle import (
        OracleLatentMAS,
        answers_of,
        oracle_config,
        plumbing_gap,
        train_oracle,
    )

    try:
        t = load_task(task, agents)
        chain = chain_for(agents, roles)
        backbone = load_model(model, device=device)
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    test = t.load("test")[:n]
    base = make_method(backbone, chain, t, Setting(channel=channel, latent_steps=latent_steps, seed=seed))
    oracle = OracleLatentMAS(backbone, base.roles, base.config, answers=answers_of(t, test))
    gap = plumbing_gap(oracle, t, test[: min(4, len(test))])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = oracle_config(
            task, task_args(task, agents), chain_name(agents, roles), model=model, device=device,
            out=out or Path(tmp) / "oracle", channel=channel, latent_steps=latent_steps, steps=steps, batch_size=batch_size, lr=lr, n_eval=n,
            seed=seed, max_new_tokens=max_new_tokens,
        )  # fmt: skip
        result = train_oracle(cfg, backbone=backbone)
    typer.echo(
        f"oracle channel: {model} on {task}, channel {channel}, {latent_steps} latent slots per writer"
    )
    typer.echo(f"plumbing: oracle columns vs the answer tokens' KV at those positions, max |diff| {gap:.2g}")
    c = _pct(result["chance"])
    typer.echo(f"Solver before training  {_pct(result['accuracy_before']):>6}  (chance {c}, n={result['n']})")
    typer.echo(
        f"Solver after {steps} steps   {_pct(result['accuracy']):>6}  (chance {c}, n={result['n']}); "
        f"final loss {result['final_loss']:.4g}"
    )
