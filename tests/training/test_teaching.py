"""Training options that can teach the `latents`-only channel (docs/configs.md, "Teaching the latents channel"):
self-distillation from the full-channel teacher, the channel curriculum, per-role learning rates, the frozen
writer of `grad_mode: solver`, answer-token weights, the shown prefix and the latent layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from diffmas.methods import MethodConfig, get_method
from diffmas.roles import RoleChain
from diffmas.testing import tiny_backbone
from diffmas.training import Batch, DiffMASTrainer, TrainConfig
from diffmas.training.config import CurriculumSection, DistillSection, PartialTrainConfig, merge_train_config
from diffmas.training.data import curriculum_rows
from diffmas.training.objective import (
    answer_weights,
    batch_loss,
    chunked_kl,
    encode_target,
    full_channel,
    hidden_distill,
)

ASSET = str(Path(__file__).parents[1] / "assets" / "views.jsonl")
FMT = "Give the final answer in \\boxed{}."


def _data(tmp_path, method=None, lora=None, optim=None) -> dict:
    return {
        "data": {"task": ASSET, "split": "test", "eval_split": None},
        "method": {"latent_steps": 2, "eval_max_new_tokens": 4, "roles": "comm", "channel": "latents",
                   **(method or {})},
        "lora": lora or {},
        "optim": {"steps": 3, "batch_size": 2, "lr": 1e-2, **(optim or {})},
        "run": {"out": str(tmp_path / "run"), "report_to": [], "save_every": 100},
    }  # fmt: skip


def _trainer(tmp_path, arch="llama", **sections) -> DiffMASTrainer:
    trainer = DiffMASTrainer(
        TrainConfig.model_validate(_data(tmp_path, **sections)), backbone=tiny_backbone(arch)
    )
    trainer.setup()
    return trainer


def _batch(tokenizer) -> Batch:
    from diffmas.tasks import get_task

    items = get_task(ASSET).load()[:2]
    targets = [encode_target(tokenizer, f"The answer is \\boxed{{{it.answer}}}.") for it in items]
    return Batch([it.question for it in items], targets, views=[it.views for it in items])


# ---------------------------------------------------------------- distillation
def test_distillation_is_zero_when_student_reads_what_the_teacher_reads():
    from diffmas.adapters import add_lora
    from diffmas.configs import LoraSpec

    roles = RoleChain.load("comm")
    backbone, _ = add_lora(tiny_backbone("qwen2"), LoraSpec(r=4), "shared", [r.name for r in roles.roles])
    distill = DistillSection(weight_hidden=1.0, weight_kl=1.0, layers=[1, -1])
    batch = _batch(backbone.tokenizer)
    terms = {}
    for channel in ("full", "latents"):
        method = get_method("latent_mas", backbone, roles, MethodConfig(latent_steps=2, channel=channel))
        loss, n = batch_loss(method, batch, FMT, "full", distill=distill, teacher=full_channel(method))
        terms[channel] = dict(batch.terms)
        assert n == sum(len(t) for t in batch.targets)
        torch.testing.assert_close(loss, torch.tensor(sum(terms[channel].values())), atol=1e-4, rtol=1e-5)
        if channel == "latents":
            loss.backward()
    assert terms["full"]["distill_hidden"] == pytest.approx(0.0, abs=1e-5)
    assert terms["full"]["distill_kl"] == pytest.approx(0.0, abs=1e-5)
    assert terms["latents"]["distill_hidden"] > 1e-3 and terms["latents"]["distill_kl"] > 1e-4
    assert terms["full"]["ce"] != pytest.approx(terms["latents"]["ce"])


def test_hidden_and_kl_losses_are_zero_on_equal_states_and_grow_apart(llama):
    from diffmas.trace import LatentTrace

    trace = LatentTrace(llama.model, 1)
    torch.manual_seed(1)
    teacher = torch.randn(5, 64)
    student = (teacher + 0.5 * torch.randn(5, 64)).requires_grad_(True)
    for kind in ("l1", "mse"):
        assert float(hidden_distill([teacher.clone()], [teacher], kind)) == 0.0
        assert float(hidden_distill([student.detach()], [teacher], kind)) > 0
    assert float(chunked_kl(trace, teacher.clone(), teacher, chunk=2)) == pytest.approx(0.0, abs=1e-6)
    kl = chunked_kl(trace, student, teacher, chunk=2, temperature=2.0)  # chunked: 3 chunks of <= 2 rows
    whole = chunked_kl(trace, student, teacher, chunk=16, temperature=2.0)
    torch.testing.assert_close(kl, whole)
    kl.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    # weights scale each position's term
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(
        hidden_distill([student.detach()], [teacher], "l1", w),
        hidden_distill([student.detach()[4:]], [teacher[4:]], "l1") * teacher[4:].std() / teacher.std(),
    )


def test_distillation_trains_and_logs_its_terms(tmp_path):
    trainer = _trainer(tmp_path, method={"distill": {"weight_hidden": 0.5, "weight_kl": 1.0, "layers": [1]}})
    result = trainer.train()
    rows = [r for r in result["history"] if "loss" in r]
    assert all({"ce", "distill_hidden", "distill_kl"} <= set(r) for r in rows)
    for r in rows:
        assert r["loss"] == pytest.approx(r["ce"] + 0.5 * r["distill_hidden"] + r["distill_kl"], rel=1e-4)
    assert trainer.teacher is not None and trainer.teacher.config.channel == "full"
    assert trainer.method.config.channel == "latents"


# ---------------------------------------------------------------- curriculum
def test_curriculum_probability_anneals_from_one_to_zero():
    c = CurriculumSection(start=10, end=30)
    assert [c.probability(s) for s in (0, 10, 15, 20, 29, 30, 100)] == [1.0, 1.0, 0.75, 0.5, 0.05, 0.0, 0.0]


def test_curriculum_rows_are_seeded_and_follow_the_probability():
    assert curriculum_rows(1.0, 4, 0, 7, 0) == [True] * 4
    assert curriculum_rows(0.0, 4, 0, 7, 0) == [False] * 4
    draw = curriculum_rows(0.5, 4000, 3, 11, 0)
    assert draw == curriculum_rows(0.5, 4000, 3, 11, 0)  # a resumed run draws the same rows
    assert draw != curriculum_rows(0.5, 4000, 3, 12, 0)
    assert abs(sum(draw) / 4000 - 0.5) < 0.03


def test_curriculum_logs_its_probability_and_the_rows_it_kept_full(tmp_path):
    trainer = _trainer(tmp_path, method={"curriculum": {"start": 1, "end": 5}}, optim={"steps": 6})
    rows = [r for r in trainer.train()["history"] if "loss" in r]
    assert [r["channel_p"] for r in rows] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert rows[0]["full_rows"] == 1.0 and rows[-1]["full_rows"] == 0.0


# ---------------------------------------------------------------- writers and readers
def _writer_grads(channel: str, grad_mode: str) -> dict[str, float]:
    from diffmas.adapters import add_lora
    from diffmas.configs import LoraSpec

    roles = RoleChain.load("comm")
    names = [r.name for r in roles.roles]
    backbone, hook = add_lora(tiny_backbone("llama"), LoraSpec(r=4), "per_role", names)
    for name, p in backbone.model.named_parameters():
        if "lora_B" in name:  # B starts at 0, which would hide the route of A's gradient
            torch.nn.init.normal_(p, std=0.05)
    method = get_method(
        "latent_mas", backbone, roles, MethodConfig(latent_steps=2, channel=channel), role_hook=hook
    )
    loss, _ = batch_loss(method, _batch(backbone.tokenizer), FMT, grad_mode)
    loss.backward()
    return {
        role: sum(float(p.grad.abs().sum()) for n, p in backbone.model.named_parameters()
                  if f".{role}." in n and p.grad is not None)
        for role in names
    }  # fmt: skip


def test_writers_get_gradient_in_latents_mode_with_per_role_adapters():
    grads = _writer_grads("latents", "full")
    assert all(g > 0 for g in grads.values()), grads  # the first writer too: only through its latents
    frozen = _writer_grads("latents", "solver")
    assert frozen["solver"] > 0 and all(frozen[r] == 0 for r in frozen if r != "solver"), frozen


@pytest.mark.parametrize("adapters", ["shared", "per_role"])
def test_grad_mode_solver_keeps_the_writer_at_its_initialisation(tmp_path, adapters):
    """The honest control: whatever the adapter mode, the upstream agents write exactly what the untrained
    model writes, after training; the Solver's adapter did learn."""
    trainer = _trainer(
        tmp_path,
        method={"grad_mode": "solver"},
        lora={"adapters": adapters},
        optim={"weight_decay": 0.1},
    )
    start = {n: p.detach().clone() for n, p in trainer.backbone.model.named_parameters() if "lora_" in n}
    trainer.train()
    model = trainer.backbone.model
    solver = trainer.roles.solver.name
    changed = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, start[n])]
    assert changed and all(f".{solver}." in n or adapters == "shared" for n in changed)
    batch = _batch(trainer.backbone.tokenizer)
    plain = get_method("latent_mas", tiny_backbone("llama"), trainer.roles, trainer.method.config)
    model.eval()
    with torch.no_grad():
        trained, _ = trainer.method.build_trace(batch.questions, FMT, batch.views)
        untrained, _ = plain.build_trace(batch.questions, FMT, batch.views)
    for a, b in zip(trained.cache.layers, untrained.cache.layers):
        torch.testing.assert_close(a.keys, b.keys)
        torch.testing.assert_close(a.values, b.values)
    manifest = json.loads((tmp_path / "run" / "adapter" / "diffmas_adapter.json").read_text())
    assert manifest["frozen_writer"] is True
    assert manifest["solver_only"] is (
        adapters == "shared"
    )  # inference runs the shared adapter for the Solver


def test_writer_and_reader_learning_rates_are_two_parameter_groups(tmp_path):
    trainer = _trainer(
        tmp_path,
        lora={"adapters": "per_role"},
        optim={"writer_lr": 3e-2, "reader_lr": 1e-3, "schedule": "constant"},
    )
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["writer"]["lr"] == 3e-2 and groups["reader"]["lr"] == 1e-3
    names = {id(p): n for n, p in trainer.backbone.model.named_parameters()}
    assert groups["reader"]["params"] and all(".solver." in names[id(p)] for p in groups["reader"]["params"])
    assert groups["writer"]["params"] and not any(
        ".solver." in names[id(p)] for p in groups["writer"]["params"]
    )
    assert len(groups["writer"]["params"]) + len(groups["reader"]["params"]) == len(trainer.params)
    trainer.train()
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [3e-2, 1e-3]


# ---------------------------------------------------------------- weights, prefix, latent layer
def test_answer_weights_lift_only_the_tokens_that_differ_across_items():
    targets = [[1, 2, 3, 40, 41, 9, 0], [1, 2, 3, 50, 9, 0], [1, 2, 3, 60, 61, 62, 9, 0]]
    weights = answer_weights(targets, 4.0)
    assert weights == [[1, 1, 1, 4, 4, 1, 1], [1, 1, 1, 4, 1, 1], [1, 1, 1, 4, 4, 4, 1, 1]]
    assert answer_weights([[1, 2, 3]], 4.0) == [[1, 1, 1]]  # one target: nothing differs


def test_answer_token_weight_weighs_the_loss(tmp_path):
    trainer = _trainer(tmp_path, method={"answer_token_weight": 5.0})
    batch = trainer._micro_batch()
    assert batch.weights is not None and any(w == 5.0 for row in batch.weights for w in row)
    assert all(len(w) == len(t) for w, t in zip(batch.weights, batch.targets))
    with torch.no_grad():
        _, norm = trainer._batch_loss(batch)
    assert norm == sum(sum(row) for row in batch.weights)


def test_show_prefix_and_latent_layer_train_and_reach_the_evaluation(tmp_path):
    trainer = _trainer(tmp_path, method={"show_prefix": True, "latent_layer": 1})
    assert trainer.method.config.show_prefix and trainer.method.config.latent_layer == 1
    losses = [r["loss"] for r in trainer.train()["history"] if "loss" in r]
    assert all(torch.isfinite(torch.tensor(losses)))
    manifest = json.loads((tmp_path / "run" / "adapter" / "diffmas_adapter.json").read_text())
    assert manifest["show_prefix"] is True and manifest["latent_layer"] == 1


@pytest.mark.parametrize("realign", ["soft", "learned"])
def test_realigners_train_with_the_new_options(tmp_path, realign):
    trainer = _trainer(
        tmp_path,
        method={"realign": realign, "latent_layer": 1, "curriculum": {"end": 2},
                "distill": {"weight_hidden": 1.0, "layers": [-1]}},
        lora={"adapters": "per_role"},
        optim={"writer_lr": 2e-2},
    )  # fmt: skip
    start = [p.detach().clone() for p in trainer.realigner.parameters()]
    rows = [r for r in trainer.train()["history"] if "loss" in r]
    assert all(torch.isfinite(torch.tensor([r["loss"], r["distill_hidden"]])).all() for r in rows)
    if realign == "learned":
        assert any(not torch.equal(a, b) for a, b in zip(start, trainer.realigner.parameters()))


# ---------------------------------------------------------------- validation and the comparison's section
@pytest.mark.parametrize(
    ("method", "lora", "optim", "message"),
    [
        ({"channel": "full", "distill": {"weight_kl": 1.0}}, {}, {}, "method.distill applies"),
        ({"distill": {}}, {}, {}, "weight_hidden > 0 or weight_kl > 0"),
        ({"distill": {"weight_kl": -1.0}}, {}, {}, "distill.weight_kl"),
        ({"distill": {"weight_kl": 1.0, "hidden_loss": "l3"}}, {}, {}, "hidden_loss"),
        ({"distill": {"weight_kl": 1.0, "temperature": 0}}, {}, {}, "temperature"),
        ({"distill": {"weight_hidden": 1.0, "layers": [1, 1]}}, {}, {}, "repeats a layer"),
        (
            {"curriculum": {"start": 5, "end": 5}},
            {},
            {},
            r"method.curriculum\n.*end \(5\) must be after start",
        ),
        ({"oracle_warmup": {"start": 5, "end": 5}}, {}, {}, r"method.oracle_warmup\n.*end \(5\) must be"),
        (
            {"oracle_warmup": {"start": 1, "end": 500}},
            {},
            {},
            r"oracle_warmup.end \(500\) is past optim.steps",
        ),
        ({"message_loss": 1.0}, {}, {}, "message_loss scores the writers"),
        (
            {"method": "single_sft", "oracle_warmup": {"end": 5}},
            {},
            {},
            "oracle_warmup needs upstream writers",
        ),
        (
            {"method": "single_latent", "oracle_warmup": {"end": 5}},
            {},
            {},
            "oracle_warmup needs upstream writers",
        ),
        ({"curriculum": {"start": 0}}, {}, {}, "curriculum.end"),
        ({"channel": "full", "curriculum": {"end": 5}}, {}, {}, "method.curriculum applies"),
        ({"channel": "full", "show_prefix": True}, {}, {}, "method.show_prefix applies"),
        ({"train_method": "single_sft", "latent_layer": 1}, {}, {}, "method.latent_layer needs latent steps"),
        ({"answer_token_weight": 0}, {}, {}, "answer_token_weight"),
        ({}, {}, {"writer_lr": 1e-3}, "optim.writer_lr needs lora.adapters 'per_role'"),
        ({}, {}, {"reader_lr": 1e-3}, "optim.reader_lr needs lora.adapters 'per_role'"),
        ({"grad_mode": "solver"}, {"adapters": "per_role"}, {"writer_lr": 1e-3}, "freezes the writers"),
        ({}, {"adapters": "per_role"}, {"writer_lr": 0}, "writer_lr"),
    ],
)
def test_bad_options_are_refused_naming_the_field(tmp_path, method, lora, optim, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.model_validate(_data(tmp_path, method=method, lora=lora, optim=optim))


@pytest.mark.parametrize(
    ("method", "message"),
    [({"latent_layer": 3}, "method.latent_layer: 3 is out of range"),
     ({"distill": {"weight_hidden": 1.0, "layers": [-4]}}, "method.distill.layers: -4 is out of range")],
)  # fmt: skip
def test_layers_out_of_the_model_are_refused_at_setup(tmp_path, method, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, method=method)


def test_the_options_are_reachable_from_a_comparisons_training_section():
    section = PartialTrainConfig.model_validate(
        {"method": {"distill": {"weight_kl": 0.5}, "curriculum": {"end": 60}, "answer_token_weight": 3.0},
         "optim": {"writer_lr": 1e-4}}
    )  # fmt: skip
    base = {"data": {"task": "secret"}, "method": {"channel": "latents"}, "lora": {"adapters": "per_role"}}
    cfg = merge_train_config(base, section)
    assert cfg.method.distill == DistillSection(weight_kl=0.5)
    assert cfg.method.curriculum == CurriculumSection(end=60)
    assert cfg.method.answer_token_weight == 3.0 and cfg.optim.writer_lr == 1e-4
    with pytest.raises(ValidationError, match="curriculum"):
        PartialTrainConfig.model_validate({"method": {"curriculum": {"start": 9, "end": 3}}})


def test_a_ladder_reads_the_trace_in_training_as_its_evaluation_does(tmp_path):
    """`show_prefix` and `latent_layer` say how the trace is read: a rung trains with its inference's values,
    and a training section that sets them is refused (the evaluation would read otherwise)."""
    from diffmas.compare import InferenceSection
    from diffmas.training.ladder import ladder_train_config

    inference = InferenceSection(channel="latents", show_prefix=True, latent_layer=1)
    common = dict(model="tiny", task="secret", split="train", n_train=8, latent_steps=2, realign="ridge",
                  channel="latents", inference=inference, roles="comm", seed=0, out_dir=tmp_path)  # fmt: skip
    cfg = ladder_train_config(training={}, overrides={"train_method": "diffmas"}, **common)
    assert cfg.method.show_prefix is True and cfg.method.latent_layer == 1
    full = ladder_train_config(
        training={}, overrides={"train_method": "diffmas"}, **{**common, "channel": "full"}
    )
    assert full.method.show_prefix is False and full.method.latent_layer == 1
    with pytest.raises(ValueError, match="training.method.show_prefix is how the trace is read"):
        ladder_train_config(training={"method": {"show_prefix": True}}, overrides={}, **common)
