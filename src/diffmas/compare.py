"""`diffmas compare`: the experiment ladder on one backbone and one task, every rung under the same roles, prompts,
grader, train split, training budget and test split.

A run directory holds one sub-directory per trained adapter (`train/<method>`) and per evaluation
(`eval/<method>`, `sweep/<label>`). Finished parts are reused: a second call after an interruption does only what is
missing (training is skipped when its final adapter exists; evaluation resumes item by item).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from diffmas.configs import BatchSize, InferenceSpec, ModelFields
from diffmas.training.config import PartialTrainConfig


@dataclass(frozen=True)
class Rung:
    """One rung of a ladder: the inference method, how its adapter is trained (None: training-free), what it
    changes in the inference settings, and (controls) whose trained adapter it reuses."""

    method: str
    training: dict[str, Any] | None = None
    inference: dict[str, Any] = field(default_factory=dict)
    adapter_of: str | None = None  # evaluate another rung's adapter (trained once, under that rung's name)
    wide_text: bool = False  # text rungs: the generous upstream budget instead of the capped one


_DIFFMAS = {"method": "diffmas", "grad_mode": "full"}
_LATENTS = {"channel": "latents"}
RUNGS: dict[str, Rung] = {
    "single": Rung("single"),
    "single_sft": Rung("single", {"method": "single_sft"}),
    "no_comm": Rung("no_comm"),
    "no_comm_sft": Rung("no_comm", {"method": "no_comm_sft"}),
    "text_mas": Rung("text_mas"),
    "text_mas_sft": Rung("text_mas", {"method": "text_mas_sft"}),
    "text_mas_wide": Rung("text_mas", wide_text=True),
    "text_mas_sft_wide": Rung("text_mas", {"method": "text_mas_sft"}, wide_text=True),
    "latent_mas": Rung("latent_mas"),
    "latent_mas_latents": Rung("latent_mas", inference=_LATENTS),
    "stitch_mas": Rung("stitch_mas"),
    "stitch_mas_sft": Rung("stitch_mas", {"method": "stitch_mas"}),
    "diffmas": Rung("latent_mas", _DIFFMAS),
    "diffmas_solver": Rung("latent_mas", {"method": "diffmas", "grad_mode": "solver"}),
    "diffmas_latents": Rung("latent_mas", {**_DIFFMAS, **_LATENTS}, _LATENTS),
    "diffmas_latents_solver": Rung(
        "latent_mas", {"method": "diffmas", "grad_mode": "solver", **_LATENTS}, _LATENTS
    ),
    "diffmas_per_role": Rung("latent_mas", {**_DIFFMAS, "adapters": "per_role"}),
    "diffmas_learned": Rung("latent_mas", {**_DIFFMAS, "realign": "learned"}, {"realign": "learned"}),
    "donor": Rung("donor", _DIFFMAS, adapter_of="diffmas"),
    "latent_donor": Rung("latent_donor", _DIFFMAS, adapter_of="diffmas"),
    "donor_latents": Rung("donor", {**_DIFFMAS, **_LATENTS}, _LATENTS, adapter_of="diffmas_latents"),
    "single_latent": Rung("single_latent", {"method": "single_latent", "grad_mode": "full"}),
}
PAPER_LADDER = [
    "single", "single_sft", "text_mas", "text_mas_sft", "latent_mas", "stitch_mas", "diffmas", "diffmas_solver",
]  # fmt: skip


class InferenceSection(InferenceSpec):
    """Every rung's inference settings (`diffmas.configs.InferenceSpec`, the fields `diffmas eval` takes), plus the
    ladder's own: the batch size and the generous budget of the `*_wide` text rungs."""

    wide_upstream_max_new_tokens: int = Field(default=64, ge=1)  # `*_wide` text rungs: the generous budget
    batch_size: BatchSize = 8  # or "auto" (see `diffmas.evaluation.EvalConfig.batch_size`)
    kv_budget_gib: float | None = Field(default=None, gt=0)
    group_by_length: bool = True  # see `diffmas.evaluation.EvalConfig.group_by_length`


class Sweep(BaseModel):
    """One axis: `key` takes each of `values` for each of `methods` (ladder names); the rest stays as configured."""

    model_config = ConfigDict(extra="forbid")

    key: Literal["latent_steps", "realign", "adapters", "grad_mode"]
    values: list[Any] = Field(min_length=1)
    methods: list[str] = Field(default_factory=lambda: ["latent_mas", "diffmas"])

    @model_validator(mode="after")
    def _check(self) -> Sweep:
        unknown = [m for m in self.methods if m not in RUNGS]
        if unknown:
            raise ValueError(f"sweep over unknown methods {unknown}: choose from {sorted(RUNGS)}")
        if self.key in ("adapters", "grad_mode"):
            untrained = [m for m in self.methods if RUNGS[m].training is None]
            if untrained:
                raise ValueError(f"sweeping {self.key} needs trained methods, not {untrained}")
        return self


class CompareConfig(ModelFields):
    """A ladder. The backbone (`model`, `dtype`, `device`, `attn_implementation`) is set at the top level for every
    rung; `training` is a partial training config laid over each trained rung's (validated now, as a whole)."""

    name: str = "compare"
    task: str
    task_args: dict[str, Any] = Field(default_factory=dict)
    train_task: str | None = None  # train on another task (the paper trains on MATH, tests on AIME)
    train_task_args: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    test_split: str = "test"
    n_train: int | None = Field(default=None, ge=1)
    n_test: int | None = Field(default=None, ge=1)
    seed: int = 0
    roles: str | None = None
    methods: list[str] = Field(default_factory=lambda: list(PAPER_LADDER))
    inference: InferenceSection = Field(default_factory=InferenceSection)
    training: PartialTrainConfig = Field(default_factory=PartialTrainConfig)
    sweeps: list[Sweep] = Field(default_factory=list)

    @field_serializer("training")
    def _training_as_written(self, training: PartialTrainConfig) -> dict[str, Any]:
        """Only the fields the section sets: a saved comparison reads as its file did."""
        return training.set_fields()

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in RUNGS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}: choose from {sorted(RUNGS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"methods listed twice: {v}")
        return v

    @model_validator(mode="after")
    def _training_section_is_a_valid_train_config(self) -> CompareConfig:
        """Catch a value that is wrong only in combination (warmup past the steps, ...) now, not after an hour of
        evaluation."""
        from diffmas.training.config import merge_train_config

        base = {"model": self.model_spec().model_dump(), "data": {"task": self.train_task or self.task}}
        merge_train_config(base, self.training)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
        from diffmas.configs import apply_overrides, read_yaml

        data = apply_overrides(read_yaml(path), overrides or [])
        return cls.model_validate(data)


def _inference(cfg: CompareConfig, rung: str, changes: dict[str, Any]) -> InferenceSection:
    """The rung's inference settings: the ladder's, then the rung's own, then a sweep point's."""
    spec = RUNGS[rung]
    update = {**spec.inference, **{k: v for k, v in changes.items() if k in InferenceSection.model_fields}}
    if spec.wide_text:
        update["upstream_max_new_tokens"] = cfg.inference.wide_upstream_max_new_tokens
    return cfg.inference.model_copy(update=update)


def _eval_config(cfg: CompareConfig, rung: str, out: Path, adapter: Path | None, **changes: Any):
    from diffmas.evaluation import EvalConfig

    inf = _inference(cfg, rung, changes)
    return EvalConfig(
        **cfg.model_dump(include=set(ModelFields.model_fields)),
        **inf.model_dump(include=set(InferenceSpec.model_fields)),
        method=RUNGS[rung].method, task=cfg.task, task_args=cfg.task_args, split=cfg.test_split, limit=cfg.n_test,
        batch_size=inf.batch_size, kv_budget_gib=inf.kv_budget_gib, group_by_length=inf.group_by_length, seed=cfg.seed, adapter=str(adapter) if adapter else None, roles=cfg.roles,
        out=str(out),
    )  # fmt: skip


class CompareRecipe:
    """setup -> run -> report, torchtune-style. `run` is idempotent over its run directory."""

    def __init__(self, cfg: CompareConfig, run_dir: str | Path, console=None):
        from rich.console import Console

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.console = console or Console()
        self.backbone = None

    def setup(self) -> None:
        from diffmas.backbones import load_backbone

        self.run_dir.mkdir(parents=True, exist_ok=True)
        saved = self.run_dir / "compare_config.yaml"
        text = yaml.safe_dump(self.cfg.model_dump(), sort_keys=False)
        if saved.exists() and _comparable(yaml.safe_load(saved.read_text(encoding="utf-8"))) != _comparable(
            self.cfg.model_dump()
        ):
            raise ValueError(f"{self.run_dir} holds a different comparison; choose another run directory")
        saved.write_text(text, encoding="utf-8")
        self.backbone = load_backbone(self.cfg.model, **self.cfg.model_spec().load_kwargs())

    # ---------------------------------------------------------------- training
    def train(self, rung: str, **changes: Any) -> tuple[Path, dict[str, Any]]:
        """Train the adapter of `rung` (skipped when its final adapter exists). Returns (adapter dir, loss curve).

        A control that reuses another rung's adapter (`adapter_of`) trains, or finds, it under that rung's name."""
        from diffmas.training.ladder import train_for_ladder

        owner = RUNGS[rung].adapter_of or rung
        training = RUNGS[owner].training or {}
        overrides = {**training, **{k: v for k, v in changes.items() if k in ("adapters", "grad_mode")}}
        label = owner + "".join(f"-{k}={v}" for k, v in changes.items())
        out = self.run_dir / "train" / label
        inf = _inference(self.cfg, owner, changes)
        self.console.print(f"[bold]train[/bold] {label}")
        return train_for_ladder(
            backbone=self.backbone,
            model=self.cfg.model,
            dtype=self.cfg.dtype,
            device=self.cfg.device,
            attn_implementation=self.cfg.attn_implementation,
            task=self.cfg.train_task or self.cfg.task,
            task_args=self.cfg.train_task_args if self.cfg.train_task else self.cfg.task_args,
            split=self.cfg.train_split,
            n_train=self.cfg.n_train,
            latent_steps=inf.latent_steps,
            realign=inf.realign,
            upstream_max_new_tokens=inf.upstream_max_new_tokens,
            channel=inf.channel,
            inference=inf,
            roles=self.cfg.roles,
            seed=self.cfg.seed,
            training=self.cfg.training,
            overrides=overrides,
            out_dir=out,
        )

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, rung: str, out: Path, **changes: Any) -> dict[str, Any]:
        from diffmas.evaluation import run_eval
        from diffmas.terminal import LazyProgress

        adapter, curve = (None, None)
        if RUNGS[rung].training is not None:
            adapter, curve = self.train(rung, **changes)
        cfg = _eval_config(self.cfg, rung, out, adapter, **changes)
        with LazyProgress(self.console, f"[bold]eval[/bold] {out.name}") as progress:  # drawn at item one
            summary = run_eval(cfg, backbone=self.backbone, progress=progress)
        if curve is not None:
            summary["training_curve"] = curve
        return summary

    def run(self) -> dict[str, Any]:
        if self.backbone is None:
            self.setup()
        started = time.perf_counter()
        methods: dict[str, Any] = {}
        training: dict[str, Any] = {}
        for rung in self.cfg.methods:
            summary = self.evaluate(rung, self.run_dir / "eval" / rung)
            curve = summary.pop("training_curve", None)
            if curve:
                training[rung] = curve
            methods[rung] = summary
        sweeps: dict[str, list[dict[str, Any]]] = {}
        for sweep in self.cfg.sweeps:
            for rung in sweep.methods:
                points = sweeps.setdefault(f"{rung} ({sweep.key})", [])
                for value in sweep.values:
                    label = f"{rung}-{sweep.key}={value}"
                    s = self.evaluate(rung, self.run_dir / "sweep" / label, **{sweep.key: value})
                    s.pop("training_curve", None)
                    points.append({"key": sweep.key, "value": value, **_headline(s)})
        any_summary = next(iter(methods.values()), {})
        results = {
            "name": self.cfg.name,
            "model": self.cfg.model,
            "task": self.cfg.task,
            "n_test": any_summary.get("n"),
            "n_train": self.cfg.n_train,
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, device={self.cfg.device}",
            "methods": methods,
            "sweeps": sweeps,
            "training": training,
            "seconds_this_call": round(time.perf_counter() - started, 1),
            "config": self.cfg.model_dump(),
        }
        tmp = self.run_dir / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(self.run_dir / "results.json")
        return results

    def report(self) -> dict[str, Path]:
        from diffmas.report import render_report

        return render_report(self.run_dir)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A saved comparison as today's config reads it: fields added since take their defaults, so a run directory
    written before them still resumes, and one that set them otherwise does not."""
    try:
        return CompareConfig.model_validate(config).model_dump()
    except ValueError:  # a saved file no longer valid is no comparison this one can continue
        return config


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "accuracy",
        "ci_low",
        "ci_high",
        "n",
        "mean_generated_tokens",
        "mean_seconds",
        "mean_trace_length",
    )
    return {k: summary.get(k) for k in keys}


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
