"""Training one rung of a `diffmas compare` ladder: every trained method gets the same data and budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffmas.training.config import PartialTrainConfig, TrainConfig, merge_train_config
from diffmas.training.specs import train_spec
from diffmas.training.trainer import DiffMASTrainer


def ladder_train_config(
    *,
    model: str,
    dtype: str = "float32",
    device: str = "cpu",
    attn_implementation: str | None = None,
    task: str,
    task_args: dict[str, Any] | None = None,
    split: str,
    n_train: int | None,
    latent_steps: int,
    realign: str,
    upstream_max_new_tokens: int | None = None,
    channel: str = "full",
    inference: Any = None,
    roles: str | None,
    seed: int,
    training: PartialTrainConfig | dict[str, Any],
    overrides: dict[str, Any],
    out_dir: Path,
) -> TrainConfig:
    """The rung's training config, in layers: the ladder's defaults, the comparison's `training:` section, the
    settings that follow the rung's inference, what the ladder fixes for every rung, and last the rung's own
    changes (`overrides`: method-section fields, and `adapters`). Backbone, dtype and device come from the
    ladder's top level only (one source of truth: the accelerator and the saved config follow what the
    evaluation loads)."""
    section = PartialTrainConfig.model_validate(training)  # a `model` key is refused here
    rung = _rung_patch(overrides)
    given = section.set_fields()
    method = section.method.set_fields()
    spec = train_spec(rung.method.get("train_method", method.get("train_method", "diffmas")))
    if not spec.writers:
        given = _without_writer_settings(given)
    defaults = {"data": {"eval_split": None}, "method": {"channel": channel}, "run": {"report_to": []}}
    follow = _follow_inference(section, inference) if inference is not None else {}
    fixed: dict[str, Any] = {
        "model": {
            "name": model,
            "dtype": dtype,
            "device": device,
            "attn_implementation": attn_implementation,
        },
        "data": {"task": task, "task_args": task_args or {}, "split": split, "n_train": n_train},
        "method": {"latent_steps": latent_steps, "roles": roles},
        "run": {"out": str(out_dir), "seed": seed},
    }
    if upstream_max_new_tokens is not None and spec.text_contexts and "upstream_max_new_tokens" not in method:
        # text_mas_sft's training contexts: the budget its evaluation uses, unless the training section says
        fixed["method"]["upstream_max_new_tokens"] = upstream_max_new_tokens
    if spec.latent and "realign" not in method:
        fixed["method"]["realign"] = realign
    if spec.latent and inference is not None:  # how the trace is read: as the rung's evaluation reads it
        fixed["method"]["latent_layer"] = inference.latent_layer
        if channel == "latents":
            fixed["method"]["show_prefix"] = inference.show_prefix
    return merge_train_config(defaults, given, follow, fixed, rung)


# settings that act on upstream latent writers: a ladder's `training:` section gives them to the rungs that have
# writers (diffmas and its controls) and not to those that have none (single_sft, text_mas_sft: one trained agent)
WRITER_SETTINGS: tuple[tuple[str, str], ...] = (
    ("method", "oracle_warmup"),
    ("method", "message_loss"),
    ("lora", "adapters"),
)


def _without_writer_settings(given: dict[str, Any]) -> dict[str, Any]:
    out = {section: dict(fields) if isinstance(fields, dict) else fields for section, fields in given.items()}
    for section, name in WRITER_SETTINGS:
        if isinstance(out.get(section), dict):
            out[section].pop(name, None)
    return out


def _rung_patch(overrides: dict[str, Any]) -> PartialTrainConfig:
    """A rung's changes as a typed patch: `adapters` is a LoRA setting, every other key a method-section field."""
    method = {k: v for k, v in overrides.items() if k != "adapters"}
    lora = {"adapters": overrides["adapters"]} if "adapters" in overrides else {}
    return PartialTrainConfig.model_validate({"method": method, "lora": lora})


def _follow_inference(section: PartialTrainConfig, inference: Any) -> dict[str, Any]:
    """Prompts and self-sampled targets as the rung's evaluation makes them: the same chat-template arguments
    (a thinking turn trains and answers alike) and, unless `training.data` says, the answer budget and sampling."""
    given = section.method.get("chat_template_kwargs")
    if given is not None and given != inference.chat_template_kwargs:
        raise ValueError(
            f"training.method.chat_template_kwargs {given} differs from inference.chat_template_kwargs "
            f"{inference.chat_template_kwargs}: set them in inference only"
        )
    for name in ("show_prefix", "latent_layer"):  # the evaluation must read the trace as training did
        if name in section.method:
            raise ValueError(
                f"training.method.{name} is how the trace is read, at inference too: set inference.{name}"
            )
    follow: dict[str, Any] = {"method": {"chat_template_kwargs": dict(inference.chat_template_kwargs)}}
    data = section.data
    if data.get("targets") != "self":
        return follow  # the other target kinds sample nothing (and keep their saved configs resumable)
    sampled: dict[str, Any] = {"self_max_new_tokens": inference.max_new_tokens}
    if inference.temperature > 0:  # the model answers by sampling: so are its targets drawn
        sampled.update(
            self_greedy_first=False,
            self_temperature=inference.temperature,
            self_top_p=inference.top_p,
            self_top_k=inference.top_k,
        )
    follow["data"] = {k: v for k, v in sampled.items() if k not in data}
    return follow


def train_for_ladder(*, backbone, out_dir: Path, **settings: Any) -> tuple[Path, dict[str, list]]:
    """Train (or reuse) the adapter in `out_dir/adapter`; return it with the loss curve. `settings` are
    `ladder_train_config`'s."""
    adapter = out_dir / "adapter"
    if not (adapter / "diffmas_adapter.json").is_file():
        cfg = ladder_train_config(out_dir=out_dir, **settings)
        # an interrupted rung continues; a rung never run starts without "no usable checkpoint" noise
        resume = out_dir.is_dir() and any(out_dir.iterdir())
        out_dir.mkdir(parents=True, exist_ok=True)
        trainer = DiffMASTrainer(cfg, backbone=backbone)  # the shared base model, lent for this run only
        try:
            trainer.setup(resume=resume)
            trainer.train(resume=resume)
        finally:
            trainer.release()
    return adapter, _curve(out_dir / "metrics.jsonl")


def _curve(path: Path) -> dict[str, list]:
    from diffmas.records import read_jsonl

    steps, losses = [], []
    if path.is_file():
        for row in read_jsonl(path):  # a torn last row is skipped, a bad row elsewhere names file and line
            if "loss" in row:
                steps.append(row["step"])
                losses.append(row["loss"])
    return {"step": steps, "loss": losses}
