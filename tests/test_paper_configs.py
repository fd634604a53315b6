"""configs/paper/*: every file validates and carries the paper's stated settings (docs: /work/shared/design.md):
Qwen3 thinking mode, T=0.6 / top-p 0.95 / top-k 20, answers up to 32768 tokens, LoRA r=8 alpha=16, lr 5e-5, AdamW
cosine, gradient accumulation 64, m = 10 latent steps, the latent-step sweep 0/10/40/100/200."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffmas.compare import CompareConfig
from diffmas.training.ladder import ladder_train_config

PAPER = sorted((Path(__file__).parents[1] / "configs" / "paper").glob("*.yaml"))
TRAIN_SETS = {  # test task -> (train task, n_train) as the paper trains
    "aime24": ("math500", 210), "aime25": ("math500", 210), "gpqa-diamond": ("commonsenseqa", 700),
    "openbookqa": ("commonsenseqa", 700), "humaneval-plus": ("humaneval", 50), "mbpp-plus": ("humaneval", 50),
}  # fmt: skip


def test_there_is_a_config_per_backbone_and_benchmark():
    assert len(PAPER) == 18


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_matches_the_paper(path, tmp_path):
    cfg = CompareConfig.from_yaml(path)
    inf = cfg.inference
    assert cfg.model.startswith("Qwen/Qwen3-") and cfg.dtype == "bfloat16" and cfg.device == "cuda"
    assert (inf.temperature, inf.top_p, inf.top_k) == (0.6, 0.95, 20)
    assert inf.max_new_tokens == 32768
    assert inf.chat_template_kwargs == {"enable_thinking": True}
    assert (inf.latent_steps, inf.realign) == (10, "ridge")
    assert "model" not in cfg.training
    assert (cfg.train_task, cfg.n_train) == TRAIN_SETS[cfg.task]
    sweep = next(s for s in cfg.sweeps if s.key == "latent_steps")
    assert sweep.values == [0, 10, 40, 100, 200]
    train = ladder_train_config(
        model=cfg.model, dtype=cfg.dtype, device=cfg.device, task=cfg.train_task, split=cfg.train_split,
        n_train=cfg.n_train, latent_steps=inf.latent_steps, realign=inf.realign, inference=inf, roles=cfg.roles,
        seed=cfg.seed, training=cfg.training, overrides={"train_method": "diffmas"}, out_dir=tmp_path,
    )  # fmt: skip
    assert (train.lora.r, train.lora.alpha, train.optim.lr, train.optim.grad_accum) == (8, 16, 5e-5, 64)
    assert train.optim.schedule == "cosine"
    assert (train.model.name, train.model.dtype, train.model.device) == (cfg.model, "bfloat16", "cuda")
    assert train.method.chat_template_kwargs == {"enable_thinking": True}  # trains on the prompts it answers
    if train.data.targets == "self":  # sampled as the model answers, with the answer budget
        d = train.data
        assert (d.self_max_new_tokens, d.self_greedy_first) == (32768, False)
        assert (d.self_temperature, d.self_top_p, d.self_top_k) == (0.6, 0.95, 20)


@pytest.mark.parametrize("path", PAPER[:1], ids=lambda p: p.stem)
def test_paper_inference_settings_reach_every_evaluation(path, tmp_path):
    from diffmas.compare import _eval_config

    cfg = CompareConfig.from_yaml(path)
    ev = _eval_config(cfg, "diffmas", tmp_path, None)
    assert (ev.temperature, ev.top_p, ev.top_k, ev.max_new_tokens) == (0.6, 0.95, 20, 32768)
    assert ev.chat_template_kwargs == {"enable_thinking": True}
    mc = ev.method_config()
    assert mc.chat_template_kwargs == {"enable_thinking": True} and mc.solver_decoding.top_k == 20
