"""Writer gradient: with per-role adapters in the `latents` channel the writer's LoRA gets gradient through its
latent columns, and the trainer logs its norm beside the reader's."""

from __future__ import annotations

import json

import pytest

from diffmas.adapters import ModelState, add_lora, unload_lora
from diffmas.configs import LoraSpec
from diffmas.diagnostics.common import Setting, chain_for, load_task, make_method
from diffmas.diagnostics.gradient import adapter_grad_norms, writer_gradient, writer_reader_grad_norms
from diffmas.testing import tiny_backbone


def _per_role(backbone, agents: int, channel: str):
    chain = chain_for(agents)
    wrapped, hook = add_lora(backbone, LoraSpec(), "per_role", [r.name for r in chain.roles])
    task = load_task("secret", agents)
    return make_method(wrapped, chain, task, Setting(channel=channel, latent_steps=2), role_hook=hook), task


@pytest.mark.parametrize("agents", [2, 3])
def test_writer_lora_gets_gradient_in_latents_mode(agents):
    backbone = tiny_backbone("qwen2")
    state = ModelState.of(backbone.model)
    method, task = _per_role(backbone, agents, "latents")
    norms = writer_gradient(method, task, task.load("train")[:2])
    assert norms["grad_norm_writer"] > 1e-6 and norms["grad_norm_reader"] > 1e-6
    # the control that shows the check can fail: with the trace built without grad the writer gets none
    cut = writer_gradient(method, task, task.load("train")[:2], grad_mode="solver")
    assert cut["grad_norm_writer"] == 0.0 and cut["grad_norm_reader"] > 1e-6
    assert cut["loss"] == pytest.approx(norms["loss"], rel=1e-5)
    # gradients are cleared afterwards
    assert all(p.grad is None for p in method.backbone.model.parameters())
    unload_lora(method.backbone.model, state)


def test_norms_by_adapter_and_missing_adapter_is_an_error():
    backbone = tiny_backbone("llama")
    method, task = _per_role(backbone, 2, "latents")
    model = method.backbone.model
    for name, p in model.named_parameters():
        if ".lora_B.planner." in name:
            p.grad = p.detach().clone().fill_(1.0)
    norms = adapter_grad_norms(model)
    assert set(norms) == {"planner", "solver"} and norms["solver"] == 0.0
    count = sum(p.numel() for n, p in model.named_parameters() if ".lora_B.planner." in n)
    assert norms["planner"] == pytest.approx(count**0.5)
    assert writer_reader_grad_norms(model, ["planner", "solver"])["grad_norm_writer"] == norms["planner"]
    with pytest.raises(ValueError, match="no trainable LoRA adapter named"):
        writer_reader_grad_norms(model, ["critic", "solver"])


def test_trainer_logs_writer_and_reader_norms(tmp_path):
    from diffmas.training import DiffMASTrainer, TrainConfig

    cfg = TrainConfig.model_validate(
        {
            "data": {"task": "secret", "task_args": {"agents": 2}, "n_train": 4, "eval_split": None},
            "method": {"train_method": "diffmas", "channel": "latents", "latent_steps": 2, "roles": "comm2"},
            "lora": {"adapters": "per_role"},
            "optim": {"steps": 2, "batch_size": 2},
            "run": {"out": str(tmp_path / "run"), "report_to": [], "save_every": 100},
        }
    )
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("qwen2"))
    trainer.setup()
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["grad_norm_writer"] > 0 and r["grad_norm_reader"] > 0
        # before clipping, the two parts make the whole (no other trainable parameter)
        total = (r["grad_norm_writer"] ** 2 + r["grad_norm_reader"] ** 2) ** 0.5
        assert total == pytest.approx(r["grad_norm"], rel=1e-3)
