"""Shared pieces of the B1-B5 benchmarks: models, sizes, questions, the interleaved timer, training steps, memory
probes and the result line every script prints last.

Timings on a shared machine are noisy, so every benchmark measures its two variants in one process, alternating
their order each repeat (A B, B A, ...), and reports the median of the per-repeat ratios: a slow spell hits both
variants of a pair alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from diffmas.backbones import Backbone
from diffmas.methods import Method, MethodConfig, get_method

FORMAT = "Reason step by step, then give the final answer in \\boxed{}."

# Short grade-school word problems and reference solutions (the training benchmarks' targets).
QUESTIONS: tuple[tuple[str, str], ...] = (
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "In May she sold 48 / 2 = 24 clips. Altogether she sold 48 + 24 = 72 clips.\nThe answer is \\boxed{72}.",
    ),
    (
        "Weng earns $12 an hour for babysitting. Yesterday she did 50 minutes of babysitting. How much did she earn?",
        "She earns 12 / 60 = 0.2 dollars a minute, so 0.2 * 50 = 10 dollars.\nThe answer is \\boxed{10}.",
    ),
    (
        "Tom has 3 boxes with 7 apples each. He gives away 5 apples. How many apples does he have left?",
        "He has 3 * 7 = 21 apples and keeps 21 - 5 = 16.\nThe answer is \\boxed{16}.",
    ),
    (
        "A train travels at 60 miles per hour for 3 hours and then at 40 miles per hour for 2 hours. "
        "How far does it travel in total?",
        "It travels 60 * 3 = 180 miles and then 40 * 2 = 80 miles, 180 + 80 = 260 miles.\nThe answer is \\boxed{260}.",
    ),
    (
        "Sara buys 4 notebooks at $3 each and a pen for $2. She pays with a $20 bill. How much change does she get?",
        "She spends 4 * 3 + 2 = 14 dollars and gets 20 - 14 = 6 dollars back.\nThe answer is \\boxed{6}.",
    ),
    (
        "A garden has 5 rows of 8 tulips. Rabbits eat 9 of them. How many tulips are left?",
        "There are 5 * 8 = 40 tulips and 40 - 9 = 31 are left.\nThe answer is \\boxed{31}.",
    ),
    (
        "James reads 12 pages a day for a week, then 20 pages a day for 3 days. How many pages does he read?",
        "He reads 12 * 7 = 84 pages and then 20 * 3 = 60 pages, 84 + 60 = 144.\nThe answer is \\boxed{144}.",
    ),
    (
        "A baker makes 96 cookies and packs them in boxes of 12. He sells 5 boxes. How many boxes are left?",
        "He packs 96 / 12 = 8 boxes and has 8 - 5 = 3 left.\nThe answer is \\boxed{3}.",
    ),
)

TINY_SPECS = {"tiny": ("llama", 4, 128), "tiny-llama": ("llama", 4, 128), "tiny-qwen2": ("qwen2", 4, 128)}


def questions(n: int) -> list[str]:
    """The first n benchmark questions (cycled if n exceeds the set)."""
    return [QUESTIONS[i % len(QUESTIONS)][0] for i in range(n)]


def targets(n: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)][1] for i in range(n)]


# ---------------------------------------------------------------------------------------------- sizes and models
@dataclass(frozen=True)
class Sizes:
    """Workload sizes. The full sizes are the issue's definitions; `quick` shrinks everything to check plumbing."""

    batch: int = 4  # questions per batch in B1, B2, B3, B5
    latent_steps: int = 10  # per upstream agent
    max_new_tokens: int = 256  # Solver answer cap (MethodConfig's default)
    upstream_max_new_tokens: int = 256  # text_mas upstream cap (issue: 256)
    b4_batch: int = 8
    b4_max_new_tokens: int = 128
    b5_latent_steps: int = 40
    repeats: int = 3
    quick: bool = False


QUICK = Sizes(
    batch=2,
    latent_steps=2,
    max_new_tokens=6,
    upstream_max_new_tokens=6,
    b4_batch=3,
    b4_max_new_tokens=4,
    b5_latent_steps=4,
    repeats=1,
    quick=True,
)


def sizes_for(model: str, quick: bool = False) -> Sizes:
    if quick:
        return QUICK
    return Sizes(repeats=5) if is_tiny(model) else Sizes()


def is_tiny(model: str) -> bool:
    return model in TINY_SPECS


DTYPE_ENV = (
    "DIFFMAS_BENCH_DTYPE"  # set by --dtype; an environment variable so that B5's subprocesses inherit it
)
DTYPES = ("float32", "bfloat16")


def bench_dtype() -> str:
    dtype = os.environ.get(DTYPE_ENV, "float32")
    if dtype not in DTYPES:
        raise ValueError(f"{DTYPE_ENV}={dtype!r}: choose one of {DTYPES}")
    return dtype


def set_bench_dtype(dtype: str | None) -> None:
    if dtype:
        os.environ[DTYPE_ENV] = dtype
        bench_dtype()


def load_model(model: str) -> Backbone:
    """`tiny`/`tiny-llama`/`tiny-qwen2`: a random in-process model (4 layers, d=128); else `load_backbone(model)`.

    In the dtype `--dtype` chose (float32 unless told)."""
    return _load_model(model, bench_dtype())


@lru_cache(maxsize=2)
def _load_model(model: str, dtype: str) -> Backbone:
    if is_tiny(model):
        from diffmas.testing import tiny_backbone

        arch, layers, hidden = TINY_SPECS[model]
        # a trained-model-like init scale: with the tests' wide init, gradients explode through 40 latent steps
        backbone = tiny_backbone(arch, layers=layers, hidden=hidden, init_std=0.02)
        backbone.model.to(getattr(torch, dtype))
        return backbone
    from diffmas.backbones import load_backbone

    return load_backbone(model, dtype=dtype)


def configure_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "dtype": bench_dtype(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "load_avg_1m": round(load[0], 2),
    }


# ---------------------------------------------------------------------------------------------- methods
def make_method(name: str, backbone: Backbone, config: MethodConfig, **kwargs: Any) -> Method:
    """A method with its realigner built now (the ridge solve is a one-off cost, not part of a rollout)."""
    method = get_method(name, backbone, config=config, **kwargs)
    if method.takes_latents:
        _ = method.realigner
    return method


def sibling(method: Method, **changes: Any) -> Method:
    """The same method with some MethodConfig fields changed, sharing the realigner."""
    return type(method)(
        method.backbone,
        method.roles,
        replace(method.config, **changes),
        realigner=method.realigner if method.takes_latents else None,
        role_hook=method.role_hook,
        checkpoint=method.checkpoint,
    )


class Rollout:
    """A no-grad `method.run(questions)` as a zero-argument callable; the latest outputs are kept in `last`."""

    def __init__(self, method: Method, qs: Sequence[str]):
        self.method, self.qs = method, list(qs)
        self.last: list = []

    def __call__(self) -> list:
        with torch.no_grad():
            self.last = self.method.run(self.qs, FORMAT)
        return self.last


def warm(method: Method, qs: Sequence[str]) -> Rollout:
    """A short run of the same method and batch (2 new tokens): pages weights in and builds kernels, untimed."""
    return Rollout(sibling(method, max_new_tokens=2, upstream_max_new_tokens=2), qs)


class PhaseTimer:
    """Where a rollout's time goes, per variant: the trace's forwards by segment kind (prompt prefills, latent
    steps, answer tokens) and the LM head. The trace is patched only inside `with`; wrap each timed call with
    `track(name, call)`. Cheap (one clock read per forward), so it can stay on while a benchmark is timed."""

    PHASES = ("prompt prefills", "latent steps", "answer steps", "LM head")

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.runs: dict[str, int] = defaultdict(int)
        self.total: dict[str, float] = defaultdict(float)
        self._current: str | None = None
        self._saved: Any = None  # the ExitStack of the observation, inside `with`

    def track(self, name: str, call: Callable[[], object]) -> Callable[[], object]:
        def tracked() -> object:
            self._current, t0 = name, time.perf_counter()
            try:
                return call()
            finally:
                self.runs[name] += 1
                self.total[name] += time.perf_counter() - t0
                self._current = None

        return tracked

    def _add(self, phase: str, seconds: float) -> None:
        if self._current is not None:
            self.seconds[self._current][phase] += seconds

    def __enter__(self) -> PhaseTimer:
        from contextlib import ExitStack

        from diffmas.trace import observe

        phases = {
            "prompt": "prompt prefills",
            "latent": "latent steps",
            "answer": "answer steps",
            "head": "LM head",
        }
        self._saved = ExitStack()
        self._saved.enter_context(observe(lambda phase, seconds: self._add(phases[phase], seconds)))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        self._saved.close()
        self._saved = None

    def summary(self, name: str) -> str:
        """Mean seconds per run of each phase, and the rest (tokenizing, the decode loop, Python)."""
        runs = max(self.runs[name], 1)
        parts = [(phase, self.seconds[name][phase] / runs) for phase in self.PHASES]
        rest = self.total[name] / runs - sum(s for _, s in parts)
        return ", ".join(f"{phase} {s:.2f} s" for phase, s in [*parts, ("rest", rest)]) + " per run"


# ---------------------------------------------------------------------------------------------- timing
def time_interleaved(
    variants: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each variant, `repeats` times, alternating the order every repeat (A B, B A, ...).

    Each variant (or its `warmup` stand-in) runs once untimed first."""
    names = list(variants)
    for name in names:
        (warmup or variants)[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            gc.collect()
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over repeats of num[i] / den[i] (both measured back to back in repeat i)."""
    return median([a / b for a, b in zip(num, den)])


def fmt_times(xs: Sequence[float], per: int = 1) -> str:
    return f"median {median(xs) / per:.3f} s  [{', '.join(f'{x / per:.3f}' for x in xs)}]"


# ---------------------------------------------------------------------------------------------- training steps
@dataclass
class TrainSetup:
    """A LoRA-wrapped backbone, the latent_mas method that builds the trace, an optimizer and one micro-batch."""

    method: Method
    optimizer: torch.optim.Optimizer
    batch: Any  # diffmas.training.Batch
    plain_prefixes: list[list[int]] = field(default_factory=list)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]


def training_setup(model: str, batch_size: int, latent_steps: int, checkpoint: bool = False) -> TrainSetup:
    """The trainer's own pieces (`add_lora`, `batch_loss`): LoRA r=8, alpha=16 on q/k/v/o, shared adapter, AdamW."""
    import copy

    from diffmas.adapters import LoraSpec, add_lora
    from diffmas.roles import RoleChain
    from diffmas.training.objective import Batch, encode_target

    base = load_model(model)
    frozen = Backbone(copy.deepcopy(base.model), base.tokenizer, base.name, base.source)
    for p in frozen.model.parameters():
        p.requires_grad_(False)
    roles = RoleChain.default()
    with warnings.catch_warnings():
        # transformers' deprecation notice, triggered by peft's gradient-checkpointing probe
        warnings.simplefilter("ignore", FutureWarning)
        lora, hook = add_lora(frozen, LoraSpec(), "shared", [r.name for r in roles.roles])
    lora.model.train()
    method = make_method(
        "latent_mas", lora, MethodConfig(latent_steps=latent_steps), role_hook=hook, checkpoint=checkpoint
    )
    params = [p for p in lora.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5)
    qs = questions(batch_size)
    batch = Batch(questions=qs, targets=[encode_target(lora.tokenizer, t) for t in targets(batch_size)])
    setup = TrainSetup(method, optimizer, batch)
    setup.plain_prefixes = plain_prefixes(method, qs, latent_steps)
    return setup


def plain_prefixes(method: Method, qs: Sequence[str], latent_steps: int) -> list[list[int]]:
    """Per question, ordinary tokens standing in for the whole DiffMAS trace before the target: every upstream
    prompt followed by `latent_steps` of its own tokens (in place of the latents), then the Solver prompt."""
    out: list[list[int]] = [[] for _ in qs]
    for role in method.roles.upstream:
        for seq, prompt in zip(out, method.encode(role, qs, FORMAT)):
            seq += prompt + (prompt * (latent_steps // len(prompt) + 1))[:latent_steps]
    for seq, prompt in zip(out, method.encode(method.roles.solver, qs, FORMAT)):
        seq += prompt
    return out


class _FixedPrefix:
    """Stands in for a Method inside `solver_loss`: the Solver's "prompt" is the given token prefix."""

    def __init__(self, method: Method, prefixes: list[list[int]]):
        self.roles = method.roles
        self._prefixes = prefixes

    def encode(
        self, role: Any, qs: Sequence[str], fmt: str, contexts: Any = None, views: Any = None
    ) -> list[list[int]]:
        return self._prefixes


def diffmas_loss(setup: TrainSetup) -> tuple[torch.Tensor, int, int]:
    """The trainer's objective, `grad_mode: full`: (summed target CE, target tokens, real tokens per sample)."""
    from diffmas.training.objective import build_trace, solver_loss

    trace = build_trace(setup.method, setup.batch.questions, FORMAT, "full")
    loss, n = solver_loss(setup.method, trace, setup.batch, FORMAT)
    return loss, n, int(trace.real_lengths.max())


def plain_loss(setup: TrainSetup) -> tuple[torch.Tensor, int, int]:
    """The same objective over ONE ordinary sequence per sample with as many tokens as the DiffMAS trace."""
    from diffmas.training.objective import solver_loss

    trace = setup.method.new_trace(len(setup.batch.questions))
    loss, n = solver_loss(_FixedPrefix(setup.method, setup.plain_prefixes), trace, setup.batch, FORMAT)  # type: ignore[arg-type]
    return loss, n, int(trace.real_lengths.max())


def train_step(setup: TrainSetup, loss_fn: Callable[[TrainSetup], tuple[torch.Tensor, int, int]]) -> dict:
    """One optimizer step: forward, backward, AdamW. Returns the mean target CE and the sequence length."""
    setup.optimizer.zero_grad(set_to_none=True)
    loss, n, length = loss_fn(setup)
    (loss / n).backward()
    setup.optimizer.step()
    return {"loss": float(loss.detach()) / n, "tokens_per_sample": length}


# ---------------------------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    """Resident set size now."""
    return _status_kb("VmRSS") * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last `reset_peak_rss` (or process start)."""
    kb = _status_kb("VmHWM")
    return kb * 1024 if kb else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kb(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------------------------- results
@dataclass
class BenchResult:
    """One benchmark's outcome: `ratio` compared against `target`, plus the measurements behind it."""

    id: str
    what: str
    ratio: float
    ratio_label: str
    target: str
    passed: bool
    model: str
    measurements: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""  # a second condition (B1 tokens, B4 identical outputs) shown with the ratio
    quick: bool = False
    env: dict[str, Any] = field(default_factory=environment)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def final_line(self) -> str:
        note = f"; {self.note}" if self.note else ""
        quick = " [quick sizes]" if self.quick else ""
        return (
            f"{self.id} RATIO {self.ratio:.2f}x ({self.ratio_label}; target {self.target}{note}) "
            f"-> {self.verdict}{quick}"
        )

    def print(self) -> None:
        print(f"== {self.id}: {self.what}  [model {self.model}]")
        env = self.env
        print(
            f"   {env['date']}, {env['cores']} cores, torch {env['torch']} with {env['torch_threads']} threads, {env.get('dtype', 'float32')}, "
            f"OMP_WAIT_POLICY={env['omp_wait_policy']}, load {env['load_avg_1m']}"
        )
        for name, value in self.measurements:
            print(f"   {name}: {value}")
        print(self.final_line(), flush=True)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parser(bench_id: str, what: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m bench.{bench_id}", description=what)
    p.add_argument(
        "--model", default="tiny", help="tiny | tiny-qwen2 | smollm2-135m | anything load_backbone takes"
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per variant (default: 5 tiny, 3 else)"
    )
    p.add_argument("--quick", action="store_true", help="minimal sizes: checks the plumbing, not the targets")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="backbone dtype (default float32)")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    return p


def task_parser(doc: str, *, task: str, roles: str, new: int) -> argparse.ArgumentParser:
    """The flags of the benchmarks that build `latent_mas` traces on a real task's test questions (B9, B10)."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default=task)
    p.add_argument("--roles", default=roles)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--latent-steps", type=int, default=4)
    p.add_argument("--new", type=int, default=new, help="answer tokens (columns) per item")
    p.add_argument("--threads", type=int, default=1)
    return p


def main(bench_id: str, what: str, run: Callable[..., BenchResult], argv: Sequence[str] | None = None) -> int:
    """Parse the standard flags, run the benchmark, print its measurements and the ratio line last."""
    args = parser(bench_id, what).parse_args(argv)
    configure_threads(args.threads)
    set_bench_dtype(args.dtype)
    torch.manual_seed(0)
    result = run(model=args.model, repeats=args.repeats, quick=args.quick)
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    result.print()
    return 0
