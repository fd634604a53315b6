"""Training with per-agent views, channel modes and the control methods (tiny in-process models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffmas.adapters import attach_adapter
from diffmas.methods import MethodConfig, get_method
from diffmas.tasks import get_task
from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

ASSET = str(Path(__file__).parents[1] / "assets" / "views.jsonl")


def _cfg(tmp_path, **method) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"task": ASSET, "split": "test", "eval_split": None},
            "method": {"latent_steps": 2, "eval_max_new_tokens": 4, "roles": "comm", **method},
            "optim": {"steps": 6, "batch_size": 2, "lr": 1e-2, "warmup_steps": 1},
            "run": {"out": str(tmp_path / "run"), "report_to": [], "save_every": 100},
        }
    )


def test_jsonl_views_are_read_and_checked(tmp_path):
    items = get_task(ASSET).load()
    assert items[0].views == ("The word is red.", "", "", "")
    assert items[0].full_view == "The word is red."
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a", "views": "not a list"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: field 'views'"):
        get_task(bad)


@pytest.mark.parametrize(
    "method",
    [
        {"train_method": "diffmas", "channel": "latents"},
        {"train_method": "diffmas", "channel": "latents", "grad_mode": "solver"},
        {"train_method": "no_comm_sft"},
        {"train_method": "single_latent"},
        {"train_method": "text_mas_sft", "upstream_max_new_tokens": 2},
    ],
)
def test_view_tasks_train_every_method(tmp_path, method):
    trainer = DiffMASTrainer(_cfg(tmp_path, **method), backbone=tiny_backbone("llama"))
    trainer.setup()
    result = trainer.train()
    losses = [r["loss"] for r in result["history"] if "loss" in r]
    assert losses[-1] < losses[0]
    manifest = json.loads((tmp_path / "run" / "adapter" / "diffmas_adapter.json").read_text())
    assert manifest["channel"] == method.get("channel", "full")
    # grad_mode solver freezes the writer: its shared adapter runs for the Solver alone, at inference too
    frozen_writer = method.get("grad_mode") == "solver"
    assert manifest["solver_only"] == (
        method["train_method"] in ("no_comm_sft", "text_mas_sft") or frozen_writer
    )
    assert manifest["frozen_writer"] == frozen_writer


def test_no_comm_sft_never_sees_the_upstream_view(tmp_path):
    """Its trace is empty and its Solver prompt holds only the Solver's own (empty) view."""
    trainer = DiffMASTrainer(_cfg(tmp_path, method="no_comm_sft"), backbone=tiny_backbone("llama"))
    trainer.setup()
    batch = trainer._micro_batch()
    prompts = trainer.method.encode(
        trainer.method.roles.solver, batch.questions, trainer.fmt, views=batch.views
    )
    text = [trainer.backbone.tokenizer.decode(p) for p in prompts]
    assert not any("The word is" in t for t in text)
    single = get_method("single", trainer.backbone, trainer.roles, MethodConfig())
    skyline = single.encode(single.roles.solver, batch.questions, trainer.fmt, views=batch.views)
    assert all("The word is" in trainer.backbone.tokenizer.decode(p) for p in skyline)


def test_latents_adapter_answers_in_latents_mode(tmp_path):
    trainer = DiffMASTrainer(
        _cfg(tmp_path, method="diffmas", channel="latents"), backbone=tiny_backbone("llama")
    )
    trainer.setup()
    trainer.train()
    assert trainer.method.config.channel == "latents"
    backbone, realigner, hook = attach_adapter(tiny_backbone("llama"), tmp_path / "run" / "adapter")
    assert realigner is not None and hook is None
    items = get_task(ASSET).load()[:2]
    questions, views = [it.question for it in items], [it.views for it in items]
    config = MethodConfig(latent_steps=2, max_new_tokens=4, channel="latents")
    trained = get_method(
        "latent_mas", trainer.backbone, trainer.roles, config, realigner=trainer.method.realigner
    )
    loaded = get_method("latent_mas", backbone, trainer.roles, config, realigner=realigner)
    with torch.no_grad():
        want = [o.answer.token_ids for o in trained.run(questions, trainer.fmt, views=views)]
        got = [o.answer.token_ids for o in loaded.run(questions, trainer.fmt, views=views)]
    assert got == want  # the reloaded adapter answers in latents mode as the trained one did
