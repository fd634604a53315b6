"""Training one rung of a `diffmas compare` ladder: every trained method gets the same data and budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffmas.configs import apply_overrides
from diffmas.training.config import TrainConfig
from diffmas.training.specs import train_spec
from diffmas.training.trainer import DiffMASTrainer


def ladder_train_config(
    *,
    model: str,
    dtype: str = "float32",
    device: str = "cpu",
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
    training: dict[str, Any],
    overrides: dict[str, Any],
    out_dir: Path,
) -> TrainConfig:
    """The rung's training config. Backbone, dtype and device come from the ladder's top level only (one source of
    truth: the accelerator and the saved config follow what the evaluation loads)."""
    if training.get("model"):
        raise ValueError(
            "training.model is not allowed in a comparison: set model, dtype and device at the top level"
        )
    data = {
        **training,
        "model": {"name": model, "dtype": dtype, "device": device},
        "data": {
            "eval_split": None,
            **training.get("data", {}),
            "task": task,
            "task_args": task_args or {},
            "split": split,
            "n_train": n_train,
        },
        "method": {
            "channel": channel,
            **training.get("method", {}),
            "latent_steps": latent_steps,
            "roles": roles,
        },
        "run": {"tensorboard": False, **training.get("run", {}), "out": str(out_dir), "seed": seed},
    }
    if inference is not None:
        _follow_inference(data, inference)
    spec = train_spec(overrides.get("method", data["method"].get("method", "diffmas")))
    if upstream_max_new_tokens is not None and spec.text_contexts:
        # text_mas_sft's training contexts: the budget its evaluation uses, unless the training section says
        data["method"].setdefault("upstream_max_new_tokens", upstream_max_new_tokens)
    if spec.latent:
        data["method"]["realign"] = data["method"].get("realign", realign)
    data = apply_overrides(
        data,
        [f"method.{k}={v}" if k != "adapters" else f"lora.adapters={v}" for k, v in overrides.items()],
    )
    return TrainConfig.model_validate(data)


def _follow_inference(data: dict[str, Any], inference: Any) -> None:
    """Prompts and self-sampled targets as the rung's evaluation makes them: the same chat-template arguments
    (a thinking turn trains and answers alike) and, unless `training.data` says, the answer budget and sampling."""
    method = data["method"]
    given = method.get("chat_template_kwargs")
    if given is not None and given != inference.chat_template_kwargs:
        raise ValueError(
            f"training.method.chat_template_kwargs {given} differs from inference.chat_template_kwargs "
            f"{inference.chat_template_kwargs}: set them in inference only"
        )
    method["chat_template_kwargs"] = dict(inference.chat_template_kwargs)
    d = data["data"]
    if d.get("targets") != "self":
        return  # the other target kinds sample nothing (and keep their saved configs resumable)
    d.setdefault("self_max_new_tokens", inference.max_new_tokens)
    if inference.temperature > 0:  # the model answers by sampling: so are its targets drawn
        d.setdefault("self_greedy_first", False)
        d.setdefault("self_temperature", inference.temperature)
        d.setdefault("self_top_p", inference.top_p)
        d.setdefault("self_top_k", inference.top_k)


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
