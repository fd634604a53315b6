"""DiffMAS training on tiny in-process models: learning, gradient routes, adapters, save/load, resume, guards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from diffmas.adapters import attach_adapter
from diffmas.methods import MethodConfig, get_method
from diffmas.testing import tiny_backbone
from diffmas.training import Batch, DiffMASTrainer, NonFiniteLossError, TrainConfig
from diffmas.training.objective import build_trace, encode_target, solver_loss

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")
FMT = "Give the final answer in \\boxed{}."


def _cfg(tmp_path, **sections) -> TrainConfig:
    data = {
        "data": {"task": ASSET, "split": "test", "eval_split": None},
        "method": {"latent_steps": 2, "eval_max_new_tokens": 6, "upstream_max_new_tokens": 4},
        "optim": {"steps": 6, "batch_size": 2, "lr": 5e-3, "warmup_steps": 1},
        "run": {"out": str(tmp_path / "run"), "report_to": [], "save_every": 100},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return TrainConfig.model_validate(data)


def _train(cfg, arch="llama", resume=False):
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone(arch))
    trainer.setup(resume=resume)
    return trainer, trainer.train(resume=resume)


def _losses(result):
    return [row["loss"] for row in result["history"] if "loss" in row]


def test_loss_falls_in_full_mode(tmp_path):
    cfg = _cfg(tmp_path, optim={"steps": 12, "lr": 1e-2})
    _, result = _train(cfg)
    losses = _losses(result)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "grad_norm", "lr", "target_tokens_per_s"} <= set(rows[0])


@pytest.mark.parametrize("method", ["single_sft", "text_mas_sft", "stitch_mas"])
def test_trained_baselines_learn(tmp_path, method):
    cfg = _cfg(tmp_path, method={"train_method": method}, optim={"steps": 8, "lr": 1e-2})
    _, result = _train(cfg)
    losses = _losses(result)
    assert losses[-1] < losses[0]
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


def _first_latent_grad(grad_mode: str) -> torch.Tensor | None:
    from diffmas.adapters import LoraSpec, add_lora

    backbone, _ = add_lora(
        tiny_backbone("qwen2"), LoraSpec(r=4), "shared", ["planner", "critic", "refiner", "solver"]
    )
    method = get_method("latent_mas", backbone, config=MethodConfig(latent_steps=3))
    realigner = method.realigner
    captured: list[torch.Tensor] = []

    def capturing(hidden):
        e = realigner(hidden)
        if not captured and e.requires_grad:
            e.retain_grad()
        captured.append(e)
        return e

    method._realigner = capturing
    questions = ["What is 2 + 3?", "What is 10 times 4?"]
    tok = backbone.tokenizer
    batch = Batch(
        questions, [encode_target(tok, "The answer is \\boxed{5}."), encode_target(tok, "\\boxed{40}")]
    )
    trace = build_trace(method, questions, FMT, grad_mode)
    loss, _ = solver_loss(method, trace, batch, FMT)
    loss.backward()
    lora_grads = [p.grad for n, p in backbone.model.named_parameters() if "lora_" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in lora_grads), "the Solver's LoRA must learn"
    return captured[0].grad


def test_gradient_reaches_first_latent_step_in_full_mode_only():
    full = _first_latent_grad("full")
    assert full is not None and full.abs().sum() > 0
    assert _first_latent_grad("solver") is None


def test_truncated_latents_cut_the_early_steps():
    from diffmas.realign import build_realigner
    from diffmas.trace import LatentTrace

    b = tiny_backbone("llama")
    realigner = build_realigner("norm", b.model)
    seen = []
    trace = LatentTrace(b.model, 1)
    trace.append_tokens([[5, 6, 7]], "p")
    for p in b.model.parameters():
        p.requires_grad_(True)
    trace.latent_steps(4, lambda h: seen.append(torch.is_grad_enabled()) or realigner(h), "p", grad_last=1)
    assert seen == [False, False, False, True]
    assert trace.segments[-1].lengths == (4,)


def test_per_role_adapters_all_learn_and_end_distinct(tmp_path):
    cfg = _cfg(tmp_path, lora={"adapters": "per_role"}, optim={"steps": 4})
    before = tiny_backbone("llama")
    trainer, _ = _train(cfg)
    model = trainer.backbone.model
    roles = ["planner", "critic", "refiner", "solver"]
    assert sorted(model.peft_config) == sorted(roles)
    b_weights = {}
    for role in roles:
        b = {n: p for n, p in model.named_parameters() if f"lora_B.{role}." in n}
        assert b and any(p.abs().sum() > 0 for p in b.values()), f"{role}'s adapter never changed"
        b_weights[role] = torch.cat([p.flatten() for p in b.values()])
    for i, r in enumerate(roles):
        for s in roles[i + 1 :]:
            assert not torch.allclose(b_weights[r], b_weights[s]), f"{r} and {s} adapters are identical"
    # the backbone itself stayed frozen: every base weight equals a fresh copy's
    trained = {
        n.replace("base_model.model.", "", 1).replace(".base_layer", ""): p
        for n, p in model.named_parameters()
        if "lora_" not in n
    }
    fresh = dict(before.model.named_parameters())
    assert trained.keys() == fresh.keys()
    assert all(torch.equal(trained[n], p) for n, p in fresh.items())


def test_solver_mode_trains_only_through_the_solver_segment(tmp_path):
    cfg = _cfg(tmp_path, lora={"adapters": "per_role"}, method={"grad_mode": "solver"}, optim={"steps": 3})
    trainer, _ = _train(cfg)
    for role in ["planner", "critic", "refiner"]:
        b = [p for n, p in trainer.backbone.model.named_parameters() if f"lora_B.{role}." in n]
        assert all(p.abs().sum() == 0 for p in b), f"{role} changed without gradient through the trace"
    solver = [p for n, p in trainer.backbone.model.named_parameters() if "lora_B.solver." in n]
    assert any(p.abs().sum() > 0 for p in solver)


@pytest.mark.parametrize(("adapters", "realign"), [("shared", "learned"), ("per_role", "ridge")])
def test_save_load_gives_identical_outputs(tmp_path, adapters, realign):
    cfg = _cfg(tmp_path, lora={"adapters": adapters}, method={"realign": realign}, optim={"steps": 3})
    trainer, result = _train(cfg)
    questions = ["What is 12 + 30?", "What is 9 times 8?"]
    trainer.backbone.model.eval()
    with torch.no_grad():
        live = trainer.method.run(questions, FMT)
        loaded_backbone, realigner, hook = attach_adapter(tiny_backbone("llama"), result["adapter"])
        assert realigner is not None and realigner.kind == realign
        method = get_method(
            "latent_mas",
            loaded_backbone,
            trainer.roles,
            trainer.method.config,
            realigner=realigner,
            role_hook=hook,
        )
        loaded = method.run(questions, FMT)
        plain = get_method("latent_mas", tiny_backbone("llama"), trainer.roles, trainer.method.config).run(
            questions, FMT
        )
    assert [o.answer.token_ids for o in live] == [o.answer.token_ids for o in loaded]
    torch.testing.assert_close(torch.tensor(live[0].answer.logprobs), torch.tensor(loaded[0].answer.logprobs))
    assert [o.answer.logprobs for o in plain] != [o.answer.logprobs for o in loaded]


def test_shared_adapter_loads_with_plain_peft(tmp_path):
    from peft import PeftModel

    _, result = _train(_cfg(tmp_path, optim={"steps": 1}))
    model = PeftModel.from_pretrained(tiny_backbone("llama").model, result["adapter"])
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_resume_continues_exactly(tmp_path):
    full_cfg = _cfg(tmp_path / "a", optim={"steps": 6})
    _, full = _train(full_cfg)
    stop_cfg = _cfg(tmp_path / "b", optim={"steps": 6}, run={"stop_after": 3})
    _, first = _train(stop_cfg)
    assert first["stopped_at"] == 3
    resume_cfg = _cfg(tmp_path / "b", optim={"steps": 6})
    _, rest = _train(resume_cfg, resume=True)
    assert _losses(first) == _losses(full)[:3]
    assert _losses(rest) == _losses(full)[3:]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, optim={"steps": 6}, run={"save_every": 2})
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
    trainer.setup()
    import diffmas.training.trainer as trainer_module

    real = trainer_module.batch_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, n = real(*args, **kwargs)
        return (loss * float("nan"), n) if calls["n"] == 3 else (loss, n)

    monkeypatch.setattr(trainer_module, "batch_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 3.*last good checkpoint is step 2"):
        trainer.train()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-000002"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"data": {"task": "x"}, "optim": {"lr": "fast"}}, "optim.lr"),
        ({"data": {"task": "x"}, "optim": {"stepz": 3}}, "stepz"),
        ({"data": {"task": "x"}, "method": {"grad_mode": "half"}}, "grad_mode"),
        (
            {"data": {"task": "x"}, "method": {"grad_mode": "solver", "truncate_latents": 2}},
            "truncate_latents",
        ),
        ({"optim": {"steps": 3}}, "data"),
        ({"data": {"task": "x"}, "lora": {"adapters": "each"}}, "adapters"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.model_validate(data)


def test_overrides_and_yaml_roundtrip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(_cfg(tmp_path).to_yaml())
    cfg = TrainConfig.from_yaml(path, ["optim.lr=0.25", "method.latent_steps=7"])
    assert cfg.optim.lr == 0.25 and cfg.method.latent_steps == 7
    with pytest.raises(ValidationError, match="optim.nope"):
        TrainConfig.from_yaml(path, ["optim.nope=1"])


def _train_counting_forwards(cfg) -> tuple[dict, int, int]:
    """Train, counting the first decoder layer's forwards in the forward passes and during backward."""
    backbone = tiny_backbone("llama")
    counts = {"forward": 0, "backward": 0}
    in_backward = {"now": False}
    real_backward = torch.Tensor.backward

    def counting_backward(self, *args, **kwargs):
        in_backward["now"] = True
        try:
            return real_backward(self, *args, **kwargs)
        finally:
            in_backward["now"] = False

    def count(*_):
        counts["backward" if in_backward["now"] else "forward"] += 1

    handle = backbone.model.model.layers[0].register_forward_hook(count)
    torch.Tensor.backward = counting_backward
    try:
        trainer = DiffMASTrainer(cfg, backbone=backbone)
        trainer.setup()
        result = trainer.train()
    finally:
        torch.Tensor.backward = real_backward
        handle.remove()
    return result, counts["forward"], counts["backward"]


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    """Same losses, and checkpointing really recomputes: the layer runs again during backward (never without it),
    once for each forward that ran with grad."""
    plain, plain_fwd, plain_bwd = _train_counting_forwards(_cfg(tmp_path / "a", optim={"steps": 3}))
    ckpt, ckpt_fwd, ckpt_bwd = _train_counting_forwards(
        _cfg(tmp_path / "b", optim={"steps": 3}, method={"gradient_checkpointing": True})
    )
    assert _losses(plain) == pytest.approx(_losses(ckpt), abs=1e-6)
    assert plain_bwd == 0
    assert ckpt_fwd == plain_fwd
    assert 0 < ckpt_bwd <= ckpt_fwd


def test_resume_after_a_kill_between_checkpoints(tmp_path, monkeypatch):
    """Killed at step 3 with the last checkpoint at step 2: step 3 is redone and logged once."""
    _, full = _train(_cfg(tmp_path / "a", optim={"steps": 6}))
    cfg = _cfg(tmp_path / "b", optim={"steps": 6}, run={"save_every": 2})
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
    trainer.setup()
    real_log = trainer._log

    def dying_log(row):
        real_log(row)
        if row["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_log", dying_log)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    _, rest = _train(cfg, resume=True)
    assert _losses(rest) == _losses(full)[2:]
    rows = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == _losses(full)


def test_run_dir_guards(tmp_path):
    _train(_cfg(tmp_path, optim={"steps": 2}, run={"save_every": 1}))
    with pytest.raises(ValueError, match="already holds a training run"):
        DiffMASTrainer(_cfg(tmp_path, optim={"steps": 2}), backbone=tiny_backbone("llama")).setup()
    with pytest.raises(ValueError, match=r"differs in optim\.lr"):
        DiffMASTrainer(_cfg(tmp_path, optim={"steps": 2, "lr": 1.0}), backbone=tiny_backbone("llama")).setup(
            resume=True
        )


def test_only_the_last_checkpoints_are_kept(tmp_path):
    _train(_cfg(tmp_path, optim={"steps": 5}, run={"save_every": 1, "keep_checkpoints": 2}))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-000004",
        "step-000005",
    ]


def test_attach_adapter_leaves_the_given_backbone_untouched(tmp_path):
    _, result = _train(_cfg(tmp_path, optim={"steps": 2}))
    base = tiny_backbone("llama")
    before = {n: p.clone() for n, p in base.model.named_parameters()}
    attach_adapter(base, result["adapter"])
    assert not any("lora" in n for n, _ in base.model.named_modules())
    assert all(torch.equal(before[n], p) for n, p in base.model.named_parameters())


def test_gradient_checkpointing_is_really_on(tmp_path):
    trainer = DiffMASTrainer(
        _cfg(tmp_path, method={"gradient_checkpointing": True}), backbone=tiny_backbone("llama")
    )
    trainer.setup()
    assert trainer.method.new_trace(1).checkpoint


def test_eval_at_start_logs_the_untrained_baseline_at_step_zero(tmp_path):
    cfg = _cfg(
        tmp_path,
        data={"eval_split": "test", "n_eval": 3},
        optim={"steps": 2},
        run={"eval_at_start": True},
    )
    _, result = _train(cfg)
    evals = [row for row in result["history"] if "eval_accuracy" in row]
    assert [row["step"] for row in evals] == [0, 2]
    assert all(row["eval_n"] == 3 for row in evals)


def test_eval_with_an_adapter_records_the_trained_method(tmp_path):
    from diffmas.evaluation import EvalConfig, run_eval
    from diffmas.records import read_jsonl

    cfg = _cfg(tmp_path, method={"train_method": "single_sft"}, optim={"steps": 1})
    _train(cfg)
    out = tmp_path / "eval"
    summary = run_eval(
        EvalConfig(
            task=ASSET, method="single", max_new_tokens=3, limit=2, adapter=str(tmp_path / "run" / "adapter"),
            out=str(out),
        ),
        backbone=tiny_backbone("llama"),
    )  # fmt: skip
    assert summary["method"] == "single_sft" and summary["decoded_by"] == "single"
    assert {(r["method"], r["decoded_by"]) for r in read_jsonl(out / "samples.jsonl")} == {
        ("single_sft", "single")
    }


# ---------------------------------------------------------------- faults: divergence, bad checkpoints, torn logs


def _quiet_trainer(cfg, arch="llama"):
    """A trainer whose console output is captured (returned as a StringIO)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    return DiffMASTrainer(cfg, backbone=tiny_backbone(arch), console=Console(file=buf, width=400)), buf


def test_huge_lr_stop_names_a_checkpoint_that_is_really_good(tmp_path):
    """lr 1e30 after a zero-lr warmup step: step 2 leaves finite weights of ~1e30 that fail at step 3. The
    step-2 checkpoint is moved aside as poisoned; the named one (step 1) is finite and gives a finite loss."""
    from diffmas.training.trainer import read_checkpoint

    cfg = _cfg(
        tmp_path,
        optim={"steps": 6, "lr": 1e30, "warmup_steps": 2, "schedule": "constant"},
        run={"save_every": 1, "keep_checkpoints": 5},
    )
    trainer, _ = _quiet_trainer(cfg)
    trainer.setup()
    with pytest.raises(
        NonFiniteLossError, match=r"at step 3.*poisoned-step-000002.*last good checkpoint is step 1"
    ):
        trainer.train()
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["poisoned-step-000002", "step-000001"]
    loaded = read_checkpoint(ckpts / "step-000001")  # raises unless every tensor is finite
    assert max(float(t.abs().max()) for t in loaded["trainable"].values()) < 1e3


def test_an_overflowing_lr_gives_the_same_clear_stop(tmp_path):
    cfg = _cfg(tmp_path, optim={"steps": 3, "lr": 1e39, "warmup_steps": 0, "schedule": "constant"})
    trainer, _ = _quiet_trainer(cfg)
    trainer.setup()
    with pytest.raises(NonFiniteLossError, match=r"update at step 1 overflowed.*no good checkpoint"):
        trainer.train()


def test_a_non_finite_state_is_never_written_as_a_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, optim={"steps": 2}, run={"save_every": 1, "stop_after": 1})
    trainer, _ = _quiet_trainer(cfg)
    trainer.setup()
    trainer.train()
    good = (tmp_path / "run" / "checkpoints" / "step-000001" / "trainable.safetensors").read_bytes()
    name, param = next(trainer._named_trainable())
    with torch.no_grad():
        param.view(-1)[0] = float("inf")
    with pytest.raises(
        NonFiniteLossError, match=rf"non-finite values \({name}\).*last good checkpoint is step 1"
    ):
        trainer.save_checkpoint()  # same step: it would have replaced the good one
    assert (tmp_path / "run" / "checkpoints" / "step-000001" / "trainable.safetensors").read_bytes() == good


def _break_checkpoint(ckpt: Path, fault: str) -> str:
    """Damage one file of a written checkpoint as `fault` says; return what the fallback warning must name."""
    from safetensors.torch import load_file, save_file

    if fault == "truncated":
        data = (ckpt / "trainable.safetensors").read_bytes()
        (ckpt / "trainable.safetensors").write_bytes(data[: len(data) // 2])
        return "trainable.safetensors is unreadable"
    if fault == "non_finite":
        state = load_file(ckpt / "optimizer.safetensors")
        meta = __import__("safetensors").safe_open(str(ckpt / "optimizer.safetensors"), "pt").metadata()
        next(v for k, v in state.items() if k.endswith(".exp_avg")).fill_(float("nan"))
        save_file(state, ckpt / "optimizer.safetensors", metadata=meta)
        return "holds non-finite values (optimizer state"
    if fault == "state_empty":
        (ckpt / "state.json").write_text("{}")
        return "state.json: no 'step'"
    if fault == "state_type":
        (ckpt / "state.json").write_text(json.dumps({"step": 4, "position": "8"}))
        return "state.json: 'position' must be a non-negative integer, got '8'"
    if fault == "state_list":
        (ckpt / "state.json").write_text("[4, 8]")
        return "state.json: expected a JSON object, got list"
    if fault == "shape":  # a (1,) tensor: `copy_` would broadcast it silently into the whole parameter
        tensors = load_file(ckpt / "trainable.safetensors")
        name = sorted(tensors)[0]
        tensors[name] = tensors[name].flatten()[:1].clone()
        save_file(tensors, ckpt / "trainable.safetensors")
        return f"{name} has shape (1,), the run's parameter"
    if fault == "optimizer_shape":
        state = load_file(ckpt / "optimizer.safetensors")
        meta = __import__("safetensors").safe_open(str(ckpt / "optimizer.safetensors"), "pt").metadata()
        key = sorted(k for k in state if k.endswith(".exp_avg_sq"))[0]
        state[key] = torch.zeros(2, 2)
        save_file(state, ckpt / "optimizer.safetensors", metadata=meta)
        return "exp_avg_sq has shape (2, 2), its parameter"
    raise AssertionError(fault)


@pytest.mark.parametrize(
    "fault",
    ["truncated", "non_finite", "state_empty", "state_type", "state_list", "shape", "optimizer_shape"],
)
def test_resume_falls_back_past_a_bad_checkpoint_and_says_so(tmp_path, fault):
    _, full = _train(_cfg(tmp_path / "a", optim={"steps": 6}))
    cfg = _cfg(
        tmp_path / "b", optim={"steps": 6}, run={"save_every": 2, "keep_checkpoints": 3, "stop_after": 4}
    )
    _train(cfg)
    newest = tmp_path / "b" / "run" / "checkpoints" / "step-000004"
    expected = _break_checkpoint(newest, fault)
    trainer, console = _quiet_trainer(_cfg(tmp_path / "b", optim={"steps": 6}, run={"save_every": 2}))
    trainer.setup(resume=True)
    rest = trainer.train(resume=True)
    said = " ".join(console.getvalue().split())
    assert expected in said and "falling back to the previous checkpoint" in said
    assert "resumed from" in said and "step-000002 (step 2)" in said
    assert _losses(rest) == _losses(full)[2:]
    assert (tmp_path / "b" / "run" / "checkpoints" / "broken-step-000004").is_dir()


def test_a_pickled_rng_file_never_runs_on_resume(tmp_path):
    """A crafted `rng.pt` in the newest checkpoint (a pickle that opens a file when loaded) is never unpickled:
    the run resumes from the checkpoint's own files and the payload's file is never made."""
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _, full = _train(_cfg(tmp_path / "a", optim={"steps": 6}))
    _train(_cfg(tmp_path / "b", optim={"steps": 6}, run={"save_every": 2, "stop_after": 4}))
    newest = tmp_path / "b" / "run" / "checkpoints" / "step-000004"
    torch.save({"torch": torch.get_rng_state(), "payload": Payload()}, newest / "rng.pt")
    _, rest = _train(_cfg(tmp_path / "b", optim={"steps": 6}, run={"save_every": 2}), resume=True)
    assert not marker.exists()
    assert _losses(rest) == _losses(full)[4:]


def test_a_second_run_on_the_same_run_out_is_refused_while_the_first_trains(tmp_path):
    from diffmas.records import OutputDirError

    first = DiffMASTrainer(_cfg(tmp_path, optim={"steps": 2}), backbone=tiny_backbone("llama"))
    first.setup()
    second = DiffMASTrainer(_cfg(tmp_path, optim={"steps": 2}), backbone=tiny_backbone("llama"))
    for resume in (False, True):
        with pytest.raises(
            OutputDirError, match=rf"run.out {tmp_path / 'run'} is in use by another run \(pid"
        ):
            second.setup(resume=resume)
    assert not (tmp_path / "run" / "checkpoints").exists()
    first.train()
    # the lock ends with `train`: the finished run can now be resumed (and finds nothing left to do)
    again = DiffMASTrainer(_cfg(tmp_path, optim={"steps": 2}), backbone=tiny_backbone("llama"))
    again.setup(resume=True)


def test_a_torn_metrics_row_is_moved_aside_on_resume(tmp_path):
    from diffmas.records import RecordRepairWarning

    _train(_cfg(tmp_path, optim={"steps": 4}, run={"save_every": 2, "stop_after": 2}))
    metrics = tmp_path / "run" / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"step": 3, "loss": 1.2')  # killed mid-write
    with pytest.warns(RecordRepairWarning, match=r"metrics\.jsonl:3: torn last line"):
        _train(_cfg(tmp_path, optim={"steps": 4}), resume=True)
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [1, 2, 3, 4]
    assert len(list(metrics.parent.glob("metrics.jsonl.torn-*"))) == 1


def test_a_torn_metrics_row_in_the_middle_names_file_and_line(tmp_path):
    _train(_cfg(tmp_path, optim={"steps": 4}, run={"save_every": 2, "stop_after": 2}))
    metrics = tmp_path / "run" / "metrics.jsonl"
    rows = metrics.read_text().splitlines()
    metrics.write_text(rows[0][:10] + "\n" + rows[1] + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:1: not valid JSON"):
        _train(_cfg(tmp_path, optim={"steps": 4}), resume=True)


def test_run_out_that_is_a_file_is_a_clean_error(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(ValueError, match=r"run\.out .*run is an existing file"):
        DiffMASTrainer(_cfg(tmp_path), backbone=tiny_backbone("llama")).setup()


def test_a_non_utf8_targets_file_names_file_and_line(tmp_path):
    targets = tmp_path / "targets.jsonl"
    targets.write_bytes(b'{"id": "a1", "target": "42"}\n{"id": "a2", "target": "\xff"}\n')
    cfg = _cfg(tmp_path, data={"targets": str(targets)})
    with pytest.raises(ValueError, match=r"targets\.jsonl:2: not valid UTF-8"):
        DiffMASTrainer(cfg, backbone=tiny_backbone("llama")).setup()


def test_ladder_loss_curve_skips_a_torn_last_row(tmp_path):
    from diffmas.training.ladder import _curve

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert _curve(path) == {"step": [1, 2], "loss": [2.0, 1.5]}
