"""Paper scale: the paper's model shapes with random weights, each figure a ratio measured in the same run.

No download: the Qwen3-8B configuration is built in-process (random weights, bf16, one GPU; Qwen3-4B when the
GPU has less than `--min-free-gib` free). Random weights cost what trained ones cost per token; only the tokens
differ, so every decode here runs its full length (no stop tokens) and the byte-level test tokenizer supplies ids.
What it measures, in this order (each section prints as it ends, so a run stopped by its time limit keeps them):

1. bandwidth: a device-to-device copy (bytes read + written / s): the hardware limit the decode is held against;
2. decode tokens/s at batch 1 and 16 from a 4-agent, 10-latent trace (3 upstream agents each a prompt and 10
   latent steps, then the Solver's prompt): our loop against HF `generate` from the same trace, and against the
   memory-bandwidth floor (weight bytes + KV bytes read per step / the copy bandwidth, read + written): the
   fraction of the hardware limit reached;
3. a latent step against a decode step, same batch (both from section 2's repeats);
4. batch 16 == one at a time for the whole latent chain (`latent_mas`): greedy tokens, max log-prob gap;
5. a DiffMAS training step (4 agents, 10 latents, a 2k-token target, gradient checkpointing, LoRA r=8 on q/k/v/o)
   against a plain LoRA step over one sequence of the same tokens, with peak memory;
6. peak memory of the DiffMAS step at 2k, 8k and 32k targets (target and head chunked alike): bytes per target
   token between the lengths, equal when memory grows linearly;
7. on CUDA, the decode again with the static answer compiled under CUDA graphs (`reduce-overhead`), its CUDA-graph
   skips counted (last: the compile is the longest and least certain part).

`--cpu` runs the same code on CPU in fp32 on a scaled-down Qwen3 (2 layers, d=128) with short lengths: a plumbing
check for CI in well under a minute, not a performance model.

    python -m bench.paper_scale                  # on one GPU (scripts/gpu_check.sh runs it; about 3 minutes)
    python -m bench.paper_scale --cpu [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.common import FORMAT, peak_rss_bytes, questions, reset_peak_rss, rss_bytes
from diffmas.backbones import Backbone

# Qwen3's published shapes (config.json of Qwen/Qwen3-8B and Qwen/Qwen3-4B); SCALED is the CPU stand-in
SHAPES: dict[str, dict[str, Any]] = {
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
    "scaled": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=32, vocab_size=4096, tie_word_embeddings=False),
}  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """The workload: the issue's figures on a GPU, shrunk for `--cpu`."""

    agents: int = 4  # 3 upstream + the Solver
    latents: int = 10
    batches: tuple[int, ...] = (1, 16)
    new: int = 64  # answer tokens per decode
    repeats: int = 3
    copy_mib: int = 1024
    equal_batch: int = 16
    equal_new: int = 16
    target: int = 2048
    long_targets: tuple[int, ...] = (8192, 32768)
    chunk: int = 1024  # target_chunk and head_chunk of the long targets
    train_repeats: int = 2


GPU_SIZES = Sizes()
CPU_SIZES = Sizes(
    latents=4, batches=(1, 4), new=8, repeats=2, copy_mib=128, equal_batch=4, equal_new=6, target=128,
    long_targets=(256, 512), chunk=64, train_repeats=1,
)  # fmt: skip


COMPILE_RESERVE = 100.0  # seconds a compiled 8B batch may take, its compile included (an estimate)


@dataclass
class Report:
    """Every figure of the run, with what it was measured on; printed as it goes, written with --json."""

    model: str
    device: str
    dtype: str
    env: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, line: str, **values: Any) -> None:
        self.figures.setdefault(section, {}).update(values)
        print(f"[{section}] {line}", flush=True)


# ---------------------------------------------------------------------------------------------- the model
def qwen3_config(shape: str, tokenizer) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        **SHAPES[shape],
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=None,  # random weights: nothing stops early, every decode runs its full length
    )


def build_model(shape: str, device: torch.device, dtype: torch.dtype) -> Backbone:
    """Random weights made directly on the device (an 8B model initialised on the CPU would take minutes)."""
    from transformers import AutoModelForCausalLM

    from diffmas.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = qwen3_config(shape, tokenizer)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if next(model.parameters()).device.type != device.type:  # a transformers that ignores the device context
        model.to(device)
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return Backbone(model=model, tokenizer=tokenizer, name=f"{shape}-random", source="in-process")


def pick_shape(device: torch.device, min_free_gib: float) -> str:
    if device.type != "cuda":
        return "scaled"
    free, _ = torch.cuda.mem_get_info(device)
    return "qwen3-8b" if free / 2**30 >= min_free_gib else "qwen3-4b"


def weight_bytes_per_step(model) -> int:
    """Bytes of weights one decode step reads: every parameter but an untied input embedding (a row lookup)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total if embed is head else total - embed.numel() * embed.element_size()


def kv_bytes_per_column(model) -> int:
    """Bytes of K and V per cached column (one row, all layers)."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    element = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * element


# ---------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def copy_bandwidth(device: torch.device, mib: int) -> float:
    """Bytes per second of a device-to-device copy, counting the bytes read and those written (best of 10)."""
    n = mib * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = math.inf
    for i in range(13):
        t0 = clock(device)
        dst.copy_(src)
        elapsed = clock(device) - t0
        if i >= 3:  # the first copies page the buffers in
            best = min(best, elapsed)
    del src, dst
    return 2 * n * 4 / best


# ---------------------------------------------------------------------------------------------- the trace
def prefill(backbone: Backbone, batch: int, sizes: Sizes, realigner) -> tuple[Any, torch.Tensor, float]:
    """A 4-agent trace up to the Solver prompt's last token: each upstream agent a prompt (pads in the middle) and
    `latents` latent steps. Returns (trace, each row's last Solver token, seconds per latent step)."""
    from diffmas.roles import RoleChain
    from diffmas.trace import LatentTrace

    tok, roles = backbone.tokenizer, RoleChain.default()
    qs = questions(batch)
    trace = LatentTrace(backbone.model, batch)
    latent_seconds = 0.0
    for k, role in enumerate(roles.upstream[: sizes.agents - 1]):
        trace.append_tokens(
            [tok.encode(f"{role.name} {k}: {q}"[: 60 + 7 * i]) for i, q in enumerate(qs)], role.name
        )
        t0 = clock(trace.device)
        trace.latent_steps(sizes.latents, realigner, role.name)
        latent_seconds += clock(trace.device) - t0
    solver = [tok.encode(f"Question {i}: {q} Answer:") for i, q in enumerate(qs)]
    trace.append_tokens([s[:-1] for s in solver], roles.solver.name)
    steps = sizes.latents * (sizes.agents - 1)
    return trace, torch.tensor([s[-1] for s in solver]), latent_seconds / max(steps, 1)


def ours(
    backbone: Backbone, batch: int, sizes: Sizes, realigner, compile: str | None = None
) -> dict[str, Any]:
    """Our greedy decode (dynamic trace, sync every 8 steps; or the static answer compiled in `compile` mode)."""
    from diffmas.decoding import DecodeConfig, decode

    trace, last, latent_s = prefill(backbone, batch, sizes, realigner)
    context = float(trace.real_lengths.float().mean()) + 1
    config = DecodeConfig(max_new_tokens=sizes.new, static_cache=compile is not None, compile=compile)  # type: ignore[arg-type]
    t0 = clock(trace.device)
    out = decode(trace, [[int(t)] for t in last], "solver", backbone.tokenizer, config, set(), sync_every=8)
    seconds = clock(trace.device) - t0
    return {
        "tokens": [d.token_ids for d in out],
        "seconds": seconds,
        "latent_s": latent_s,
        "context": context,
    }


def generated(backbone: Backbone, batch: int, sizes: Sizes, realigner) -> dict[str, Any]:
    """HF `generate` handed the same trace (its cache, mask and positions), greedy, `new` tokens."""
    from transformers import GenerationConfig

    trace, last, latent_s = prefill(backbone, batch, sizes, realigner)
    pad = backbone.tokenizer.pad_token_id
    config = GenerationConfig(
        max_new_tokens=sizes.new, do_sample=False, pad_token_id=pad
    )  # no eos: full length
    t0 = clock(trace.device)
    inputs = trace.generate_inputs(last)
    seqs = backbone.model.generate(**inputs, generation_config=config)
    seconds = clock(trace.device) - t0
    tokens = seqs[:, inputs["input_ids"].shape[1] :].tolist()
    return {"tokens": tokens, "seconds": seconds, "latent_s": latent_s}


def decode_section(
    report: Report,
    backbone: Backbone,
    sizes: Sizes,
    realigner,
    bandwidth: float,
    compile: str | None = None,
    time_left: Callable[[], float] = lambda: math.inf,
) -> None:
    """Sections 2 and 3 (or 7 with `compile`): interleaved repeats, the order alternating; medians reported.
    A compiled batch is skipped (and said so) when `time_left()` is under COMPILE_RESERVE seconds."""
    name = "ours_compiled" if compile else "ours"
    for batch in sizes.batches:
        if compile and time_left() < COMPILE_RESERVE:
            report.add(f"compiled b{batch}", f"skipped: {time_left():.0f} s left of --budget", skipped=True)
            continue
        weights, per_column = weight_bytes_per_step(backbone.model), kv_bytes_per_column(backbone.model)
        variants: dict[str, Callable[[], dict[str, Any]]] = {
            name: lambda b=batch: ours(backbone, b, sizes, realigner, compile),
        }
        if compile is None:
            variants["generate"] = lambda b=batch: generated(
                backbone, batch=b, sizes=sizes, realigner=realigner
            )
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in variants}
        with torch.no_grad():
            first = {n: fn() for n, fn in variants.items()}  # warm-up (and the compile)
            for r in range(sizes.repeats):
                for n in list(variants) if r % 2 == 0 else list(variants)[::-1]:
                    gc.collect()
                    runs[n].append(variants[n]())
        step_s = {n: statistics.median(x["seconds"] for x in rs) / sizes.new for n, rs in runs.items()}
        rates = {n: batch / s for n, s in step_s.items()}
        context = first[name]["context"] + sizes.new / 2  # mean columns read per step over the answer
        # HBM moves about as many bytes per second reading alone as a copy's reads and writes together
        floor_s = (weights + batch * context * per_column) / bandwidth
        values: dict[str, Any] = {
            f"{name}_tokens_per_s": rates[name],
            f"{name}_floor_fraction": floor_s / step_s[name],
            "floor_tokens_per_s": batch / floor_s,
            "bytes_per_step": weights + batch * context * per_column,
        }
        line = (
            f"batch {batch}: {name} {rates[name]:.1f} tokens/s = {values[f'{name}_floor_fraction']:.2f} of the "
            f"bandwidth floor ({batch / floor_s:.1f} tokens/s: {values['bytes_per_step'] / 2**30:.2f} GiB per step)"
        )
        if "generate" in variants:
            ratios = [g["seconds"] / o["seconds"] for g, o in zip(runs["generate"], runs[name])]
            agree = sum(a == b for a, b in zip(first[name]["tokens"], first["generate"]["tokens"]))
            latent = statistics.median(x["latent_s"] for x in runs[name])
            values.update(
                generate_tokens_per_s=rates["generate"],
                generate_over_ours=statistics.median(ratios),
                rows_agree=f"{agree}/{batch}",
                latent_step_s=latent,
                decode_step_s=step_s[name],
                latent_over_decode=latent / step_s[name],
            )
            line += (
                f"; generate {rates['generate']:.1f} tokens/s (generate/ours time {values['generate_over_ours']:.2f}x,"
                f" greedy rows agree {agree}/{batch}); latent step {latent * 1e3:.2f} ms vs decode step "
                f"{step_s[name] * 1e3:.2f} ms = {values['latent_over_decode']:.2f}x"
            )
        report.add(f"{'compiled' if compile else 'decode'} b{batch}", line, **values)


# ---------------------------------------------------------------------------------------------- batch == alone
def equality_section(report: Report, backbone: Backbone, sizes: Sizes) -> None:
    """`latent_mas` on a batch against each question alone: rows whose greedy tokens agree, and the largest
    log-prob gap over the tokens both produced (up to each row's first difference)."""
    from diffmas.methods import MethodConfig, get_method

    method = get_method(
        "latent_mas",
        backbone,
        config=MethodConfig(latent_steps=sizes.latents, max_new_tokens=sizes.equal_new),
    )
    qs = questions(sizes.equal_batch)
    with torch.no_grad():
        batched = method.run(qs, FORMAT)
        alone = [method.run([q], FORMAT)[0] for q in qs]
    same, gap, prefix = 0, 0.0, []
    for b, a in zip(batched, alone):
        bt, at = b.answer.token_ids, a.answer.token_ids
        k = next((i for i, (x, y) in enumerate(zip(bt, at)) if x != y), min(len(bt), len(at)))
        same += bt == at
        prefix.append(k)
        gaps = [abs(x - y) for x, y in zip(b.answer.logprobs[:k], a.answer.logprobs[:k])]
        gap = max([gap, *gaps])
    report.add(
        "batch==alone",
        f"batch {len(qs)}: {same}/{len(qs)} rows identical (each row agrees on its first {min(prefix)} tokens at "
        f"least), max log-prob gap {gap:.2e} over the agreed tokens",
        rows_identical=same,
        rows=len(qs),
        min_agreed_tokens=min(prefix),
        max_logprob_gap=gap,
    )


# ---------------------------------------------------------------------------------------------- training
class Memory:
    """Peak memory of a block above what was held before it: the CUDA allocator's peak on a GPU, the process's
    peak resident set on the CPU (coarser: it includes the allocator's caching)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> Memory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.before = rss_bytes()
            reset_peak_rss()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.before
        else:
            self.peak = max(peak_rss_bytes() - self.before, 0)


def train_setup(backbone: Backbone, sizes: Sizes, target: int) -> Any:
    """LoRA (r=8, alpha=16, q/k/v/o, shared across agents) on the model, `latent_mas` with the trace's gradient
    checkpointing, AdamW, and one item whose target is `target` random tokens."""
    from bench.common import TrainSetup, plain_prefixes
    from diffmas.adapters import LoraSpec, add_lora
    from diffmas.methods import MethodConfig, get_method
    from diffmas.roles import RoleChain
    from diffmas.training import Batch

    roles = [r.name for r in RoleChain.default().roles]
    lora, hook = add_lora(backbone, LoraSpec(), "shared", roles)
    lora.model.train()
    method = get_method(
        "latent_mas", lora, config=MethodConfig(latent_steps=sizes.latents), role_hook=hook, checkpoint=True
    )
    _ = method.realigner
    params = [p for p in lora.model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    qs = questions(1)
    ids = torch.randint(3, len(backbone.tokenizer), (target,), generator=g).tolist()
    setup = TrainSetup(method, torch.optim.AdamW(params, lr=1e-5), Batch(questions=qs, targets=[ids]))
    setup.plain_prefixes = plain_prefixes(method, qs, sizes.latents)
    return setup


def diffmas_step(setup: Any, chunk: int | None = None) -> tuple[float, int]:
    """Forward + backward + AdamW of the DiffMAS objective (`grad_mode: full`); (loss, trace length)."""
    from diffmas.training.objective import build_trace, solver_loss

    setup.optimizer.zero_grad(set_to_none=True)
    trace = build_trace(setup.method, setup.batch.questions, FORMAT, "full")
    options = {"target_chunk": chunk, "head_chunk": chunk} if chunk else {}
    loss, n = solver_loss(setup.method, trace, setup.batch, FORMAT, **options)
    (loss / n).backward()
    setup.optimizer.step()
    return float(loss.detach()) / n, int(trace.real_lengths.max())


def plain_step(setup: Any) -> tuple[float, int]:
    """The same, over ONE ordinary sequence with as many tokens as the DiffMAS trace (bench.common.plain_loss)."""
    from bench.common import plain_loss

    setup.optimizer.zero_grad(set_to_none=True)
    loss, n, length = plain_loss(setup)
    (loss / n).backward()
    setup.optimizer.step()
    return float(loss.detach()) / n, length


def training_section(report: Report, backbone: Backbone, sizes: Sizes, device: torch.device) -> None:
    """Sections 5 and 6. LoRA is attached for them and taken off after (the model is the base one again)."""
    from diffmas.adapters import ModelState, unload_lora

    state = ModelState.of(backbone.model)
    setup = train_setup(backbone, sizes, sizes.target)
    try:
        _train_figures(report, backbone, sizes, device, setup)
    finally:
        unload_lora(setup.method.backbone.model, state)


def _train_figures(
    report: Report, backbone: Backbone, sizes: Sizes, device: torch.device, setup: Any
) -> None:
    variants = {"diffmas": lambda: diffmas_step(setup), "plain": lambda: plain_step(setup)}
    tokens = {n: fn()[1] for n, fn in variants.items()}  # warm-up (AdamW's state is made here)
    peak: dict[str, int] = {}
    for n, fn in variants.items():
        with Memory(device) as mem:
            fn()
        peak[n] = mem.peak
    seconds: dict[str, list[float]] = {n: [] for n in variants}
    for r in range(sizes.train_repeats):
        for n in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            t0 = clock(device)
            variants[n]()
            seconds[n].append(clock(device) - t0)
    ratio = statistics.median(d / p for d, p in zip(seconds["diffmas"], seconds["plain"]))
    report.add(
        "train",
        f"{sizes.target}-token target, {tokens['diffmas']} tokens per sequence: DiffMAS step "
        f"{statistics.median(seconds['diffmas']):.3f} s vs plain LoRA {statistics.median(seconds['plain']):.3f} s "
        f"= {ratio:.2f}x; peak memory {peak['diffmas'] / 2**20:.0f} MiB vs {peak['plain'] / 2**20:.0f} MiB",
        diffmas_s=statistics.median(seconds["diffmas"]),
        plain_s=statistics.median(seconds["plain"]),
        diffmas_over_plain=ratio,
        diffmas_peak_bytes=peak["diffmas"],
        plain_peak_bytes=peak["plain"],
        tokens=tokens["diffmas"],
    )
    points = []
    for length in (sizes.target, *sizes.long_targets):  # all chunked alike, so that only the length changes
        long = train_setup_like(setup, backbone, length)
        try:
            with Memory(device) as mem:
                loss, _ = diffmas_step(long, chunk=sizes.chunk)
        except torch.OutOfMemoryError as e:  # say so and keep the figures that follow
            setup.optimizer.zero_grad(set_to_none=True)
            report.add(f"memory {length}", f"{length}-token target: out of memory ({str(e)[:120]})", oom=True)
            break
        points.append((length, mem.peak))
        report.add(
            f"memory {length}",
            f"{length}-token target (chunks of {sizes.chunk}): peak {mem.peak / 2**20:.0f} MiB, loss {loss:.3f}",
            peak_bytes=mem.peak,
        )
    slopes = [(b - a) / (m - n) for (n, a), (m, b) in zip(points, points[1:])]
    report.add(
        "memory growth",
        "bytes per target token between "
        + ", ".join(f"{n}->{m}: {s / 1024:.1f} KiB" for (n, _), (m, _), s in zip(points, points[1:], slopes))
        + " (equal when memory grows linearly)",
        bytes_per_token=slopes,
    )


def train_setup_like(setup: Any, backbone: Backbone, target: int) -> Any:
    """The same LoRA'd method and optimizer with a longer random target."""
    from diffmas.training import Batch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, len(backbone.tokenizer), (target,), generator=g).tolist()
    return type(setup)(setup.method, setup.optimizer, Batch(questions=setup.batch.questions, targets=[ids]))


# ---------------------------------------------------------------------------------------------- main
def environment(device: torch.device) -> dict[str, Any]:
    import platform

    import transformers

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.paper_scale", description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="the scaled-down configuration on CPU in fp32 (CI)")
    p.add_argument(
        "--model", choices=list(SHAPES), default=None, help="default: qwen3-8b (qwen3-4b if short)"
    )
    p.add_argument("--min-free-gib", type=float, default=60.0, help="GPU memory free to pick Qwen3-8B")
    p.add_argument("--no-compile", action="store_true", help="skip the CUDA-graph decode (section 5)")
    p.add_argument("--skip-training", action="store_true", help="skip sections 6 and 7")
    p.add_argument("--json", type=Path, default=None, help="also write every figure here")
    p.add_argument(
        "--budget", type=float, default=None, help="seconds: skip compiled batches that would pass it"
    )
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        p.error("no CUDA device here: run with --cpu for the scaled-down configuration")
    device = torch.device("cpu" if args.cpu else "cuda")
    dtype = torch.float32 if args.cpu else torch.bfloat16
    sizes = CPU_SIZES if args.cpu else GPU_SIZES
    shape = args.model or pick_shape(device, args.min_free_gib)
    start = time.perf_counter()
    torch.manual_seed(0)
    backbone = build_model(shape, device, dtype)
    report = Report(shape, str(device), str(dtype).removeprefix("torch."), environment(device))
    n_params = sum(p.numel() for p in backbone.model.parameters())
    print(
        f"paper_scale: {shape} with random weights ({n_params / 1e9:.2f}B parameters, {report.dtype}) on "
        f"{report.env.get('gpu', report.env.get('cpu'))}; built in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    bandwidth = copy_bandwidth(device, sizes.copy_mib)
    report.add(
        "bandwidth",
        f"device-to-device copy {bandwidth / 1e9:.0f} GB/s (read + written)",
        bytes_per_s=bandwidth,
    )
    from diffmas.realign import build_realigner

    realigner = build_realigner("ridge", backbone.model)
    decode_section(report, backbone, sizes, realigner, bandwidth)
    equality_section(report, backbone, sizes)
    if not args.skip_training:
        training_section(report, backbone, sizes, device)
    if (
        device.type == "cuda" and not args.no_compile
    ):  # last: the compile is the longest and least certain part
        from torch._dynamo.utils import counters

        from diffmas.trace import release_static_buffers

        counters.clear()
        budget = args.budget if args.budget is not None else math.inf
        decode_section(
            report, backbone, sizes, realigner, bandwidth, "reduce-overhead",
            time_left=lambda: budget - (time.perf_counter() - start),
        )  # fmt: skip
        skips = counters["inductor"].get("cudagraph_skips", 0)
        report.add("compiled", f"inductor cudagraph skips: {skips}", cudagraph_skips=skips)
        release_static_buffers(backbone.model)
    report.figures["seconds"] = time.perf_counter() - start
    print(f"paper_scale: done in {report.figures['seconds']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return asdict(report)


if __name__ == "__main__":
    main(sys.argv[1:])
