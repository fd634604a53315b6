"""The linear probe on latent columns: it finds a label that is linearly there, and the shuffled control does not."""

from __future__ import annotations

import torch

from diffmas.diagnostics.common import Setting, chain_for, load_task, make_method
from diffmas.diagnostics.probe import hit_rate, latent_features, probe_latents, probe_scores
from diffmas.methods import build_latent_trace


def test_the_probe_reads_a_linear_label_and_not_a_shuffled_one():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 32, generator=g) * 3
    y = torch.randint(0, 8, (400,), generator=g)
    x = centres[y] + torch.randn(400, 32, generator=g)
    train, test = slice(0, 300), slice(300, 400)
    assert hit_rate(probe_scores(x[train], y[train], x[test], 8), y[test]) > 0.9
    shuffled = y[train][torch.randperm(300, generator=g)]
    assert hit_rate(probe_scores(x[train], shuffled, x[test], 8), y[test]) < 0.35  # chance 1/8
    # labels outside the training classes count as misses
    assert hit_rate(probe_scores(x[train], y[train], x[test], 8), torch.full((100,), -1)) == 0.0


def test_latent_features_are_the_latent_columns_kv(llama):
    task = load_task("secret", 4)
    method = make_method(llama, chain_for(4), task, Setting(latent_steps=2))
    items = task.load("test")[:3]
    features = latent_features(method, task, items, batch_size=2)
    assert len(features) == llama.model.config.num_hidden_layers
    with torch.no_grad():
        q = [task.render_question(items[2])]
        trace, messages = build_latent_trace(method, q, task.format_instruction, views=[items[2].views])
    assert len(messages) == 3  # three writers, their columns side by side
    keys = torch.cat([trace.column_states(m.start, m.end)[1][0] for m in messages], dim=2)
    # the third item came in a batch of its own: the same numbers as inside a batch (up to float rounding)
    torch.testing.assert_close(features[1][0][2], keys[0].transpose(0, 1).reshape(-1), atol=1e-5, rtol=0)
    width = 3 * 2 * llama.model.config.num_key_value_heads * (64 // 4)
    assert features[0][0].shape == (3, width) and features[0][1].shape == (3, width)


def test_probe_latents_reports_every_layer_against_chance(llama):
    task = load_task("secret", 2)
    method = make_method(llama, chain_for(2), task, Setting(latent_steps=1))
    train, test = task.load("train")[:16], task.load("test")[:4]
    result = probe_latents(method, task, train, test, batch_size=8)
    assert [r.layer for r in result.rows] == [0, 1]
    assert result.classes == len({it.answer for it in train}) and result.chance == 1 / result.classes
    assert result.n_train == 16 and result.n_test == 4
    for r in result.rows:
        for v in (r.keys, r.values, r.keys_shuffled, r.values_shuffled, r.keys_options, r.values_options):
            assert v is not None and 0.0 <= v <= 1.0
        assert r.keys_options >= r.keys  # a pick among the options is right whenever the pick among all is
    assert result.option_chance == 1 / 8  # secret's 8 options


def test_the_pick_among_options_ignores_labels_outside_them():
    scores = torch.tensor([[5.0, 1.0, 0.0], [0.0, 3.0, 2.0]])
    allowed = torch.tensor([[False, True, True], [True, False, True]])
    assert (
        hit_rate(scores, torch.tensor([1, 2]), allowed) == 1.0
    )  # the best allowed label, not the best overall
    assert hit_rate(scores, torch.tensor([0, 1]), allowed) == 0.0
    assert hit_rate(scores, torch.tensor([0, 1])) == 1.0  # without options: the best label overall


def test_an_adapter_gives_the_trained_writers_latents_and_is_taken_off_after(tmp_path):
    """`--adapter`: the features come from the trained writer inside the block, and from the base model after."""
    from diffmas.diagnostics.common import method_with
    from diffmas.testing import tiny_backbone
    from diffmas.training import DiffMASTrainer, TrainConfig

    cfg = TrainConfig.model_validate(
        {
            "data": {"task": "secret", "task_args": {"agents": 2}, "n_train": 4, "eval_split": None},
            "method": {"train_method": "diffmas", "channel": "latents", "latent_steps": 1, "roles": "comm2"},
            "lora": {"adapters": "per_role"},
            "optim": {"steps": 2, "batch_size": 2, "lr": 0.05},
            "run": {"out": str(tmp_path / "run"), "report_to": [], "save_every": 100},
        }
    )
    backbone = tiny_backbone("llama")
    trainer = DiffMASTrainer(cfg, backbone=backbone)
    trainer.setup()
    adapter = trainer.train()["adapter"]
    trainer.release()
    task = load_task("secret", 2)
    items = task.load("test")[:2]
    setting = Setting(latent_steps=1)
    base = latent_features(make_method(backbone, chain_for(2), task, setting), task, items)
    with method_with(backbone, chain_for(2), task, setting, adapter) as method:
        trained = latent_features(method, task, items)
    after = latent_features(make_method(backbone, chain_for(2), task, setting), task, items)
    assert (trained[1][1] - base[1][1]).abs().max() > 1e-4
    torch.testing.assert_close(after[1][1], base[1][1], atol=0, rtol=0)
