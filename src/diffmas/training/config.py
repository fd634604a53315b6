"""The training config: typed sections, validated before anything loads (unknown keys and wrong types are errors
that name the key), saved into the run directory and into every checkpoint."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, Field, model_validator

from diffmas.configs import DecodingSpec, LoraSpec, MethodSpec, ModelSpec, Spec, deep_merge, default_of
from diffmas.training import tracking
from diffmas.training.specs import TRAIN_METHOD_NAMES, train_spec

TrainMethod = Literal[TRAIN_METHOD_NAMES]  # type: ignore[valid-type]
OLD_TRAIN_METHOD_KEY = "method"  # `method.method`, the training method's key before it had a name of its own


def renamed_train_method(data: Any, where: str = "method") -> Any:
    """A method section of the old shape (`method: {method: diffmas}`) in today's (`method: {train_method: ...}`),
    with a one-line FutureWarning; `where` names the section in the messages. Both keys at once is an error."""
    if not isinstance(data, dict) or OLD_TRAIN_METHOD_KEY not in data:
        return data
    if "train_method" in data:
        raise ValueError(f"{where}: give train_method only ({where}.method is its old name)")
    warnings.warn(
        f"{where}.method is deprecated: write {where}.train_method (the training method, e.g. "
        f"train_method: {data[OLD_TRAIN_METHOD_KEY]})",
        FutureWarning,
        stacklevel=2,
    )
    data = dict(data)
    data["train_method"] = data.pop(OLD_TRAIN_METHOD_KEY)
    return data


_Section = Spec
ModelSection = ModelSpec
LoraSection = LoraSpec


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
    self_top_p: float = Field(default=default_of(DecodingSpec, "top_p"), gt=0, le=1)
    self_top_k: int | None = Field(default=None, ge=1)
    self_max_new_tokens: int | None = Field(default=None, ge=1)


class DistillSection(_Section):
    """Self-distillation from the full-channel teacher (CODI, arXiv 2502.21074; KaVa, 2510.02312): the same model
    and adapters reading every upstream column (channel `full`, no grad) teach the `latents`-channel student at
    the positions that predict target tokens. Both terms are sums over those positions, added to the CE sum
    with their weights (then divided by the target tokens, like the CE)."""

    weight_hidden: float = Field(default=0.0, ge=0)  # hidden states at `layers`: L1 or MSE, see `hidden_loss`
    weight_kl: float = Field(default=0.0, ge=0)  # KL(teacher || student) of the next-token distributions
    hidden_loss: Literal["l1", "mse"] = "l1"
    # hidden-state indices: 0 the embeddings, k after block k, -1 the final (normed) state
    layers: list[int] = Field(default_factory=lambda: [-1], min_length=1)
    temperature: float = Field(default=1.0, gt=0)  # of both distributions in the KL (scaled back by T^2)

    @model_validator(mode="after")
    def _some_weight(self) -> DistillSection:
        if self.weight_hidden == 0 and self.weight_kl == 0:
            raise ValueError("method.distill needs weight_hidden > 0 or weight_kl > 0")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"method.distill.layers repeats a layer: {self.layers}")
        return self


class CurriculumSection(_Section):
    """A channel curriculum (Coconut's stages, C2C's annealed gate): in the `latents` channel each row of a
    micro-batch keeps reading the upstream prompts (as in `full`) with probability p, 1 up to optimizer step
    `start`, falling linearly to 0 at step `end` and 0 after."""

    start: int = Field(default=0, ge=0)
    end: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> CurriculumSection:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    def probability(self, step: int) -> float:
        """p at optimizer step `step` (0 for the first update)."""
        if step <= self.start:
            return 1.0
        return max(0.0, (self.end - step) / (self.end - self.start))


class MethodSection(MethodSpec):
    """The communication settings shared with inference (`MethodSpec`: latent steps, realign, channel, the upstream
    text budget `text_mas_sft` trains on, chat-template arguments), plus what only training has: first the training
    method (`diffmas.methods.specs.TRAIN_METHODS`: what is trained, and which inference method answers with it)."""

    train_method: TrainMethod = "diffmas"
    grad_mode: Literal["full", "solver"] = "full"
    truncate_latents: int | None = Field(default=None, ge=0)
    gradient_checkpointing: bool = False
    # the Solver's prompt + target go into the trace in segments of at most this many tokens (None: one segment);
    # with gradient_checkpointing each is checkpointed on its own, so a long target's activations are one segment's
    target_chunk: int | None = Field(default=None, ge=1)
    roles: str | None = None
    eval_max_new_tokens: int = Field(default=128, ge=1)  # the held-out evaluation's answer budget
    distill: DistillSection | None = None
    curriculum: CurriculumSection | None = None
    # target tokens that differ across the training items' targets (not in the prefix or suffix every target
    # shares: "The answer is \boxed{" and "}.") weigh this much, the shared ones 1 (the loss is the weighted mean)
    answer_token_weight: float = Field(default=1.0, gt=0)
    # the reader's warm-up on the oracle channel: each row's latent slots hold the answer's token embeddings
    # (`OracleRealigner`) with a probability annealed like `curriculum` (1 up to `start`, 0 from `end`), its
    # writers' own latents otherwise; evaluation always reads the writers' own
    oracle_warmup: CurriculumSection | None = None
    # with oracle_warmup: the weight of the writers' own cross-entropy on the answer's tokens at their latent
    # steps (every row, throughout; `OracleRealigner.message_losses`): the code the reader learns on the oracle,
    # taught to the writer directly instead of only through the reader's gradient (0: off)
    message_loss: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _old_shape(cls, data: Any) -> Any:
        return renamed_train_method(data)


class OptimSection(_Section):
    steps: int = Field(default=100, ge=1)  # optimizer steps
    batch_size: int = Field(default=4, ge=1)  # per process, per micro-batch
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    # per-role adapters: the upstream agents' adapters (and a learned realigner) and the Solver's own learning
    # rates (None: lr), as two parameter groups
    writer_lr: float | None = Field(default=None, gt=0)
    reader_lr: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    mixed_precision: Literal["no", "bf16"] = "no"


class ConfigDeprecationWarning(UserWarning):
    """A config field that still loads but has been replaced (shown by the CLI, unlike Python's
    DeprecationWarning, which the CLI silences for the libraries' sake)."""


def _yaml_list(names: list[str]) -> str:
    return "none" if not names else f"[{', '.join(names)}]"


ReportTo = Annotated[list[str], BeforeValidator(tracking.parse_report_to)]


class RunSection(_Section):
    out: str = "runs/train"
    seed: int = 0
    log_every: int = Field(default=1, ge=1)
    save_every: int = Field(default=50, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    eval_every: int | None = Field(default=None, ge=1)
    eval_at_start: bool = False  # the untrained baseline on the same held-out items, logged at step 0
    eval_at_end: bool = True
    # held-out questions answered per batch by the in-training evaluation (the grades do not depend on it)
    eval_batch_size: int = Field(default=8, ge=1)
    # experiment trackers (diffmas.training.tracking): names, "all" (every installed one) or "none"
    report_to: ReportTo = Field(default_factory=lambda: ["tensorboard"])
    stop_after: int | None = Field(
        default=None, ge=1
    )  # stop (as if interrupted) after this step; for resume tests

    @model_validator(mode="before")
    @classmethod
    def _old_tensorboard_flag(cls, data: Any) -> Any:
        """`tensorboard: true/false`, the field `report_to` replaced: still read (false drops TensorBoard from the
        trackers, true adds it), with a deprecation message."""
        if not isinstance(data, dict) or "tensorboard" not in data:
            return data
        data = dict(data)
        flag = data.pop("tensorboard")
        if not isinstance(flag, bool):
            raise ValueError(
                f"run.tensorboard (deprecated: use run.report_to) must be true or false, not {flag!r}"
            )
        names = tracking.parse_report_to(data.get("report_to", ["tensorboard"]))
        if not flag and "all" in names:
            raise ValueError("run.tensorboard: false with run.report_to: all: list the trackers in report_to")
        names = [n for n in names if n != "tensorboard"]
        data["report_to"] = ["tensorboard", *names] if flag and "all" not in names else names
        warnings.warn(
            f"run.tensorboard is deprecated: write run.report_to: {_yaml_list(data['report_to'])} instead",
            ConfigDeprecationWarning,
            stacklevel=2,
        )
        return data

    @property
    def tensorboard(self) -> bool:
        """Whether TensorBoard is among the trackers (the old flag's meaning, read-only)."""
        return bool({"tensorboard", "all"} & set(self.report_to))


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
        if not train_spec(m.train_method).latent and m.realign == "learned":
            raise ValueError(f"method.realign 'learned' needs latent steps; {m.train_method} takes none")
        if self.optim.warmup_steps > self.optim.steps:
            raise ValueError("optim.warmup_steps must not exceed optim.steps")
        spec = train_spec(m.train_method)
        latents_only = {
            "distill": m.distill,
            "curriculum": m.curriculum,
            "show_prefix": m.show_prefix or None,
        }
        for name, value in latents_only.items():
            if value is not None and (m.channel != "latents" or not spec.latent):
                raise ValueError(
                    f"method.{name} applies to a latent method in channel 'latents' (here {m.train_method} in "
                    f"channel {m.channel!r}): in `full` every row already reads the upstream prompts"
                )
        if m.oracle_warmup is not None and not spec.writers:
            raise ValueError(
                f"method.oracle_warmup needs upstream writers with latent steps; {m.train_method} has none"
            )
        if m.oracle_warmup is not None and m.oracle_warmup.end > self.optim.steps:
            raise ValueError(
                f"method.oracle_warmup.end ({m.oracle_warmup.end}) is past optim.steps ({self.optim.steps}): the "
                "writers would never feed the Solver on their own before the run ends"
            )
        if m.message_loss and m.oracle_warmup is None:
            raise ValueError(
                "method.message_loss scores the writers against the oracle's slots: set method.oracle_warmup"
            )
        if m.message_loss and m.grad_mode == "solver":
            raise ValueError("method.message_loss trains the writers; grad_mode 'solver' freezes them")
        if m.latent_layer is not None and not spec.latent:
            raise ValueError(f"method.latent_layer needs latent steps; {m.train_method} takes none")
        for name in ("writer_lr", "reader_lr"):
            if getattr(self.optim, name) is not None and self.lora.adapters != "per_role":
                raise ValueError(f"optim.{name} needs lora.adapters 'per_role' (one adapter per role)")
        if self.optim.writer_lr is not None and m.grad_mode == "solver":
            raise ValueError(
                "optim.writer_lr: grad_mode 'solver' freezes the writers at their initialisation"
            )
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        from diffmas.configs import apply_overrides, read_yaml

        return cls.model_validate(apply_overrides(read_yaml(path), overrides or []))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)

    def following(self, saved: TrainConfig, saved_keys: dict[str, Any]) -> TrainConfig:
        """This config as it resumes the run `saved` came from: a setting whose default changed since that run was
        written (and that this config leaves at its default) keeps the run's value. `saved_keys` is the saved file
        as read, to tell a run written before the change by the fields it lacks."""
        if "attn_implementation" in saved_keys.get("model", {}):
            return self  # written with today's defaults
        update: dict[str, dict[str, Any]] = {}
        for section, name in _CHANGED_DEFAULTS:
            if name not in getattr(self, section).model_fields_set:
                update.setdefault(section, {})[name] = getattr(getattr(saved, section), name)
        return merge_train_config(self.model_dump(), update) if update else self

    def resume_key(self) -> dict[str, Any]:
        """What a resumed run must share with its checkpoint: everything but the run's bookkeeping and its step budget
        (`BUDGET_FIELDS`), and the upstream text budget only where the method generates upstream text."""
        key = self.model_dump()
        key["run"] = {k: v for k, v in key["run"].items() if k not in _VOLATILE}
        # the budget may change (the trainer checks that it stays at or past the checkpoint's step)
        for section, name in BUDGET_FIELDS:
            del key[section][name]
        if not train_spec(self.method.train_method).text_contexts:
            del key["method"]["upstream_max_new_tokens"]
        return key


# run settings a resumed run may change: when to log, save, evaluate and stop
_VOLATILE = {
    "stop_after",
    "eval_every",
    "eval_at_end",
    "eval_batch_size",
    "log_every",
    "save_every",
    "report_to",
    "keep_checkpoints",
}
# (section, field) of the training budget: a resumed run may set it anywhere at or past its checkpoint's step, to
# train a finished run further (as transformers' Trainer resumes with a larger max_steps)
BUDGET_FIELDS = (("optim", "steps"),)
# (section, field) whose default changed: 128 upstream tokens before the single default of `diffmas.configs`
_CHANGED_DEFAULTS = (("method", "upstream_max_new_tokens"),)


def _partial(section: type[BaseModel]) -> type[BaseModel]:
    """`section` with every field optional and unset by default: a patch that says only what it changes (a field's
    type and bounds still apply to a value it sets)."""
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for name, info in section.model_fields.items():
        partial = copy.copy(info)
        partial.default, partial.default_factory = None, None
        fields[name] = (info.annotation | None, partial)  # type: ignore[operator]
    for name, annotation in _DEPRECATED_FIELDS.get(section.__name__, {}).items():
        fields[name] = (annotation, None)  # still read, converted by the full section's validator
    return create_model(f"Partial{section.__name__}", __base__=_PartialSection, **fields)


# fields a section still reads though they are no longer its fields (a patch must carry them to it)
_DEPRECATED_FIELDS: dict[str, dict[str, Any]] = {"RunSection": {"tensorboard": bool | None}}


class _PartialSection(Spec):
    """A patch of a section. Reads like the mapping of the fields it sets (`patch["optim"]["steps"]`)."""

    def __getitem__(self, key: str) -> Any:
        if key not in self.model_fields_set:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.model_fields_set

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.model_fields_set else default

    def set_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


if TYPE_CHECKING:  # built at run time from the sections; to the type checker, patches with any field

    class _AnyPatch(_PartialSection):
        def __getattr__(self, name: str) -> Any: ...

    class PartialData(_AnyPatch): ...

    class PartialMethod(_AnyPatch): ...

    class PartialLora(_AnyPatch): ...

    class PartialOptim(_AnyPatch): ...

    class PartialRun(_AnyPatch): ...

else:
    PartialData, PartialMethod, PartialLora = (_partial(s) for s in (DataSection, MethodSection, LoraSection))
    PartialOptim, PartialRun = _partial(OptimSection), _partial(RunSection)


class PartialTrainConfig(_PartialSection):
    """A training config that sets only some fields (a comparison's `training:` section, a rung's changes): the
    sections of `TrainConfig` but `model` (a comparison sets the backbone at its top level), every field optional.
    Laid over a full config by `merge_train_config`, never by string overrides."""

    data: PartialData = Field(default_factory=PartialData)
    method: PartialMethod = Field(default_factory=PartialMethod)
    lora: PartialLora = Field(default_factory=PartialLora)
    optim: PartialOptim = Field(default_factory=PartialOptim)
    run: PartialRun = Field(default_factory=PartialRun)

    @model_validator(mode="before")
    @classmethod
    def _no_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("model"):
            raise ValueError(
                "training.model is not allowed: the comparison's top-level model, dtype and device are what "
                "every rung trains and evaluates on (one source of truth)"
            )
        if isinstance(data, dict) and "model" in data:
            data = {k: v for k, v in data.items() if k != "model"}  # an empty `model:` says nothing
        if isinstance(data, dict) and isinstance(data.get("method"), dict):
            data = {**data, "method": renamed_train_method(data["method"], "training.method")}
        return data


def merge_train_config(base: dict[str, Any], *patches: PartialTrainConfig | dict[str, Any]) -> TrainConfig:
    """A full config from `base` (a mapping of sections) with each patch's set fields laid over it in turn."""
    layers = [p.set_fields() if isinstance(p, PartialTrainConfig) else p for p in patches]
    return TrainConfig.model_validate(deep_merge(base, *layers))
