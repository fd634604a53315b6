"""The training config: typed sections, validated before anything loads (unknown keys and wrong types are errors
that name the key), saved into the run directory and into every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from diffmas.training.specs import TRAIN_METHOD_NAMES, train_spec

TrainMethod = Literal[TRAIN_METHOD_NAMES]  # type: ignore[valid-type]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    name: str = "smollm2-135m"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"


class DataSection(_Section):
    task: str
    task_args: dict[str, Any] = Field(default_factory=dict)
    split: str = "train"
    n_train: int | None = Field(default=None, ge=1)
    eval_split: str | None = "test"
    n_eval: int = Field(default=32, ge=1)
    # "reference": the item's solution/answer in the task's format; "self": rejection-sampled correct answers of
    # the untrained chain; or a path to a JSONL of {"id", "target"}.
    targets: str = "reference"
    self_samples: int = Field(default=4, ge=1)
    # rejection sampling for `targets: self`: the first attempt greedy (unless off: greedy loops in thinking
    # mode), the others sampled so; each answer's budget (None: method.eval_max_new_tokens)
    self_greedy_first: bool = True
    self_temperature: float = Field(default=0.6, gt=0)
    self_top_p: float = Field(default=0.95, gt=0, le=1)
    self_top_k: int | None = Field(default=None, ge=1)
    self_max_new_tokens: int | None = Field(default=None, ge=1)


class MethodSection(_Section):
    method: TrainMethod = "diffmas"
    latent_steps: int = Field(default=10, ge=0)
    realign: Literal["norm", "ridge", "learned", "soft"] = "ridge"
    grad_mode: Literal["full", "solver"] = "full"
    channel: Literal["full", "latents"] = "full"  # what later agents read of the trace (see diffmas.trace)
    truncate_latents: int | None = Field(default=None, ge=0)
    gradient_checkpointing: bool = False
    # the Solver's prompt + target go into the trace in segments of at most this many tokens (None: one segment);
    # with gradient_checkpointing each is checkpointed on its own, so a long target's activations are one segment's
    target_chunk: int | None = Field(default=None, ge=1)
    roles: str | None = None
    upstream_max_new_tokens: int = Field(default=128, ge=1)  # text_mas_sft: the upstream text budget
    # keyword arguments of the chat template (Qwen3's `enable_thinking`); a comparison sets them from inference
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    eval_max_new_tokens: int = Field(default=128, ge=1)


class LoraSection(_Section):
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    adapters: Literal["shared", "per_role"] = "shared"


class OptimSection(_Section):
    steps: int = Field(default=100, ge=1)  # optimizer steps
    batch_size: int = Field(default=4, ge=1)  # per process, per micro-batch
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    mixed_precision: Literal["no", "bf16"] = "no"


class RunSection(_Section):
    out: str = "runs/train"
    seed: int = 0
    log_every: int = Field(default=1, ge=1)
    save_every: int = Field(default=50, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    eval_every: int | None = Field(default=None, ge=1)
    eval_at_start: bool = False  # the untrained baseline on the same held-out items, logged at step 0
    eval_at_end: bool = True
    tensorboard: bool = True
    stop_after: int | None = Field(
        default=None, ge=1
    )  # stop (as if interrupted) after this step; for resume tests


class TrainConfig(_Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    method: MethodSection = Field(default_factory=MethodSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        m = self.method
        if m.truncate_latents is not None and m.grad_mode == "solver":
            raise ValueError("method.truncate_latents only applies to grad_mode 'full'")
        if not train_spec(m.method).latent and m.realign == "learned":
            raise ValueError(f"method.realign 'learned' needs latent steps; {m.method} takes none")
        if self.optim.warmup_steps > self.optim.steps:
            raise ValueError("optim.warmup_steps must not exceed optim.steps")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        from diffmas.configs import apply_overrides, read_yaml

        return cls.model_validate(apply_overrides(read_yaml(path), overrides or []))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)
