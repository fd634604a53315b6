"""The composed config model (`diffmas.configs`): one spec per concern shared by `diffmas eval`, `train` and
`compare`, one default per setting, a comparison's `training:` a typed partial training config, and
`attn_implementation` carried from every config to the loaded model (a bad value refused before anything loads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import ValidationError

from diffmas.compare import RUNGS, CompareConfig, CompareRecipe, InferenceSection, _eval_config
from diffmas.configs import UPSTREAM_MAX_NEW_TOKENS, AttnImplementation, InferenceSpec, LoraSpec
from diffmas.evaluation import EvalConfig
from diffmas.training.config import LoraSection, MethodSection, PartialTrainConfig, TrainConfig
from diffmas.training.ladder import ladder_train_config

ASSET = str(Path(__file__).parent / "assets" / "arith.jsonl")


def _ladder(**extra) -> CompareConfig:
    return CompareConfig.model_validate({"task": ASSET, "methods": ["single", "diffmas"], **extra})


def _rung(cfg: CompareConfig, tmp_path: Path, overrides: dict) -> TrainConfig:
    inf = cfg.inference
    return ladder_train_config(
        model=cfg.model, task=cfg.task, split="train", n_train=None, latent_steps=inf.latent_steps,
        realign=inf.realign, upstream_max_new_tokens=inf.upstream_max_new_tokens, channel=inf.channel,
        inference=inf, roles=None, seed=0, training=cfg.training, overrides=overrides, out_dir=tmp_path,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- one default each
def test_the_upstream_text_cap_has_one_default_everywhere():
    """eval, a comparison's inference and a training config's method section read the same default."""
    defaults = {
        "eval": EvalConfig(task="x").upstream_max_new_tokens,
        "compare": InferenceSection().upstream_max_new_tokens,
        "train": MethodSection().upstream_max_new_tokens,
    }
    assert defaults == dict.fromkeys(defaults, UPSTREAM_MAX_NEW_TOKENS)


def test_eval_and_compare_share_every_inference_field_and_default():
    shared = set(InferenceSpec.model_fields)
    assert shared <= set(EvalConfig.model_fields) and shared <= set(InferenceSection.model_fields)
    for name in shared:
        assert EvalConfig.model_fields[name].get_default(
            call_default_factory=True
        ) == InferenceSection.model_fields[name].get_default(call_default_factory=True), name


def test_every_inference_field_of_a_comparison_reaches_its_evaluations(tmp_path):
    """Each shared field set to a non-default value in `inference:` arrives in the rung's EvalConfig."""
    changed = {
        "latent_steps": 3, "realign": "soft", "channel": "latents", "upstream_max_new_tokens": 7,
        "chat_template_kwargs": {"enable_thinking": True}, "max_new_tokens": 9, "temperature": 0.5, "top_p": 0.5,
        "top_k": 5, "samples": 3, "static_cache": True, "compile": "reduce-overhead", "show_prefix": True,
        "latent_layer": 1,
    }  # fmt: skip
    assert set(changed) == set(InferenceSpec.model_fields)
    assert all(
        changed[k] != InferenceSpec.model_fields[k].get_default(call_default_factory=True) for k in changed
    )
    cfg = _ladder(inference=changed, attn_implementation="eager", dtype="bfloat16")
    ev = _eval_config(cfg, "latent_mas", tmp_path, None)
    assert {k: getattr(ev, k) for k in changed} == changed
    assert (ev.attn_implementation, ev.dtype) == ("eager", "bfloat16")


def test_the_kernels_a_config_accepts_are_the_ones_load_backbone_checks():
    from diffmas.backbones import ATTN_IMPLEMENTATIONS

    assert get_args(AttnImplementation) == ATTN_IMPLEMENTATIONS


# ------------------------------------------------------------------------------------------------- one LoRA spec
def test_one_lora_spec_for_the_trainer_and_add_lora():
    from diffmas.adapters import LoraSpec as AdapterLoraSpec

    assert AdapterLoraSpec is LoraSpec is LoraSection
    with pytest.raises(ValidationError, match="r"):
        LoraSpec(r=0)
    peft = LoraSpec(r=4, alpha=8, target_modules=["q_proj"]).peft_config()
    assert (peft.r, peft.lora_alpha, set(peft.target_modules)) == (4, 8, {"q_proj"})


# ------------------------------------------------------------------------------------- a typed `training:` section
def test_the_training_section_is_a_typed_partial_train_config():
    cfg = _ladder(training={"optim": {"steps": 4}, "method": {"realign": "soft"}})
    assert isinstance(cfg.training, PartialTrainConfig)
    assert cfg.training.optim.steps == 4 and cfg.training["optim"]["steps"] == 4
    assert cfg.model_dump()["training"] == {
        "optim": {"steps": 4},
        "method": {"realign": "soft"},
    }  # as written
    assert CompareConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize(
    ("training", "where"),
    [
        ({"optim": {"steps": 0}}, "training.optim.steps"),
        ({"lora": {"adapter": "shared"}}, "training.lora.adapter"),
        ({"method": {"train_method": "nope"}}, "training.method.train_method"),
    ],
)
def test_a_bad_training_field_is_an_error_at_its_place(training, where):
    with pytest.raises(ValidationError) as e:
        _ladder(training=training)
    assert where in {".".join(str(p) for p in err["loc"]) for err in e.value.errors()}


def test_a_training_section_wrong_only_as_a_whole_is_refused_now():
    with pytest.raises(ValidationError, match="warmup_steps"):
        _ladder(training={"optim": {"steps": 2, "warmup_steps": 5}})


def test_a_rung_config_layers_ladder_section_inference_and_the_rung(tmp_path):
    cfg = _ladder(
        training={"optim": {"steps": 3}, "method": {"grad_mode": "solver", "channel": "latents"}},
        inference={"latent_steps": 2, "realign": "norm", "chat_template_kwargs": {"enable_thinking": True}},
    )
    train = _rung(cfg, tmp_path, {"train_method": "diffmas", "grad_mode": "full", "adapters": "per_role"})
    assert train.optim.steps == 3  # the section
    assert (train.method.channel, train.method.realign) == ("latents", "norm")  # section, then the ladder's
    assert (train.method.grad_mode, train.lora.adapters) == ("full", "per_role")  # the rung's changes win
    assert train.method.latent_steps == 2 and train.method.chat_template_kwargs == {"enable_thinking": True}
    assert (train.data.task, train.data.eval_split, train.run.tensorboard) == (ASSET, None, False)
    assert train.run.out == str(tmp_path)


def test_text_rungs_train_on_the_inference_upstream_budget_unless_the_section_says(tmp_path):
    cfg = _ladder(inference={"upstream_max_new_tokens": 12})
    assert _rung(cfg, tmp_path, {"train_method": "text_mas_sft"}).method.upstream_max_new_tokens == 12
    cfg = _ladder(
        inference={"upstream_max_new_tokens": 12}, training={"method": {"upstream_max_new_tokens": 5}}
    )
    assert _rung(cfg, tmp_path, {"train_method": "text_mas_sft"}).method.upstream_max_new_tokens == 5


# ------------------------------------------------------------------------------------------ attn_implementation
@pytest.mark.parametrize(
    "build",
    [
        lambda: EvalConfig(task="x", attn_implementation="flash"),
        lambda: _ladder(attn_implementation="flash"),
        lambda: TrainConfig.model_validate(
            {"data": {"task": "x"}, "model": {"attn_implementation": "flash"}}
        ),
    ],
    ids=["eval", "compare", "train"],
)
def test_a_bad_attn_implementation_is_an_error_naming_the_field(build):
    with pytest.raises(ValidationError) as e:
        build()
    assert any(err["loc"][-1] == "attn_implementation" for err in e.value.errors())


def test_train_config_attn_implementation_reaches_the_loaded_model(tmp_path, tiny_llama_dir):
    from diffmas.training import DiffMASTrainer

    def cfg(out: str, **model) -> TrainConfig:
        return TrainConfig.model_validate(
            {
                "model": {"name": str(tiny_llama_dir), **model},
                "data": {"task": ASSET, "split": "test", "eval_split": None, "n_train": 2},
                "method": {"latent_steps": 1, "eval_max_new_tokens": 2},
                "optim": {"steps": 1, "batch_size": 2},
                "run": {"out": str(tmp_path / out), "report_to": []},
            }
        )

    default = DiffMASTrainer(cfg("default"))
    default.setup()
    assert default.backbone.model.config._attn_implementation != "eager"  # so the next assertion can fail
    trainer = DiffMASTrainer(cfg("eager", attn_implementation="eager"))
    trainer.setup()
    assert trainer.backbone.model.config._attn_implementation == "eager"
    saved = yaml.safe_load((tmp_path / "eager" / "config.yaml").read_text())
    assert saved["model"]["attn_implementation"] == "eager"


def test_compare_attn_implementation_reaches_the_loaded_model_and_every_rung(tmp_path, tiny_llama_dir):
    cfg = _ladder(model=str(tiny_llama_dir), attn_implementation="eager")
    recipe = CompareRecipe(cfg, tmp_path / "run")
    recipe.setup()
    assert recipe.backbone.model.config._attn_implementation == "eager"
    saved = yaml.safe_load((tmp_path / "run" / "compare_config.yaml").read_text())
    assert saved["attn_implementation"] == "eager"
    assert _eval_config(cfg, "single", tmp_path, None).attn_implementation == "eager"
    train = ladder_train_config(
        model=cfg.model, attn_implementation=cfg.attn_implementation, task=cfg.task, split="train", n_train=None,
        latent_steps=2, realign="ridge", roles=None, seed=0, training=cfg.training, overrides={}, out_dir=tmp_path,
    )  # fmt: skip
    assert train.model.attn_implementation == "eager"


def test_cli_eval_attn_implementation_reaches_the_model_and_a_bad_one_loads_nothing(
    tmp_path, tiny_llama_dir, monkeypatch
):
    from typer.testing import CliRunner

    import diffmas.backbones
    from diffmas.cli import app

    real, loaded = diffmas.backbones.load_backbone, []

    def recording(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(diffmas.backbones, "load_backbone", recording)
    common = [
        "--verbose",
        "eval",
        "--task",
        ASSET,
        "--model",
        str(tiny_llama_dir),
        "--method",
        "single",
        "--limit",
        "1",
    ]
    common += ["--max-new-tokens", "2"]
    bad = CliRunner().invoke(app, [*common, "--attn-implementation", "flash", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "attn_implementation" in bad.output
    assert not loaded and not (tmp_path / "bad").exists()
    good = CliRunner().invoke(app, [*common, "--attn-implementation", "eager", "--out", str(tmp_path / "ok")])
    assert good.exit_code == 0, good.output
    assert [b.model.config._attn_implementation for b in loaded] == ["eager"]
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["config"]["attn_implementation"] == "eager"


def test_system_refuses_a_bad_attn_implementation_before_loading(tmp_path):
    import diffmas

    (tmp_path / "diffmas_adapter.json").write_text(
        json.dumps({"base_model": str(tmp_path / "no-such-model")})
    )
    with pytest.raises(ValidationError, match="attn_implementation"):
        diffmas.System.from_pretrained(tmp_path, attn_implementation="flash")


# --------------------------------------------------------------------------------- run directories written before
# compare_config.yaml as the code before the composed config model wrote it (no attn_implementation; training as
# a plain mapping)
OLD_COMPARE = {
    "name": "compare", "model": "smollm2-135m", "task": ASSET, "task_args": {}, "train_task": None,
    "train_task_args": {}, "train_split": "train", "test_split": "test", "n_train": None, "n_test": None,
    "dtype": "float32", "device": "cpu", "seed": 0, "roles": None, "methods": ["single", "diffmas"],
    "inference": {
        "latent_steps": 10, "realign": "ridge", "max_new_tokens": 3, "upstream_max_new_tokens": 256,
        "wide_upstream_max_new_tokens": 64, "channel": "full", "batch_size": 8, "temperature": 0.0, "top_p": 0.95,
        "top_k": None, "samples": 1, "chat_template_kwargs": {},
    },
    "training": {"optim": {"steps": 2}}, "sweeps": [],
}  # fmt: skip


def test_a_comparison_saved_in_the_old_shape_still_resumes(tmp_path, tiny_llama_dir):
    run = tmp_path / "run"
    run.mkdir()
    old = {**OLD_COMPARE, "model": str(tiny_llama_dir)}
    (run / "compare_config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    now = _ladder(
        model=str(tiny_llama_dir), training={"optim": {"steps": 2}}, inference={"max_new_tokens": 3}
    )
    CompareRecipe(now, run).setup()  # the same comparison: no error
    (run / "compare_config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.raises(ValueError, match="different comparison"):
        CompareRecipe(now.model_copy(update={"attn_implementation": "eager"}), run).setup()


def test_cli_demo_and_train_refuse_a_bad_attn_implementation_before_loading(tmp_path):
    from typer.testing import CliRunner

    from diffmas.cli import app

    run = tmp_path / "demo"
    demo = CliRunner().invoke(app, ["demo", "--attn-implementation", "flash", "--run-dir", str(run)])
    assert demo.exit_code == 2 and "attn_implementation" in demo.output and not run.exists()
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": {"task": ASSET}, "run": {"out": str(tmp_path / "train")}}))
    train = CliRunner().invoke(app, ["train", str(config), "model.attn_implementation=flash"])
    assert train.exit_code == 2 and "model.attn_implementation" in train.output
    assert not (tmp_path / "train").exists()


def test_a_comparisons_batching_fields_reach_its_evaluations_and_leave_the_results_key(tmp_path):
    cfg = _ladder(inference={"batch_size": 3, "group_by_length": False})
    ev = _eval_config(cfg, "latent_mas", tmp_path, None)
    assert (ev.batch_size, ev.group_by_length) == (3, False)
    assert ev.results_key() == ev.model_copy(update={"batch_size": 5, "group_by_length": True}).results_key()


@pytest.mark.parametrize(
    ("section", "field"),
    [("optim", "batch_size"), ("optim", "lr"), ("optim", "max_grad_norm"), ("run", "seed"), ("lora", "r")],
)
def test_a_bool_for_a_number_is_refused_not_read_as_one(tmp_path, section, field):
    """YAML `true` is a bool; pydantic's lax mode would read it as 1 (a batch of one, a learning rate of 1)."""
    path = tmp_path / "train.yaml"
    path.write_text(f"data:\n  task: x\n{section}:\n  {field}: true\n")
    with pytest.raises(ValidationError, match=rf"{section}\.{field}\n.*expected a number, got true"):
        TrainConfig.from_yaml(path)


def test_numbers_and_real_bools_still_load(tmp_path):
    """Only a bool in a number's place is refused: YAML's `1e-4` (a string to YAML 1.1) is still a float, a
    bool field still takes `false`, and an eval's batch size `auto` or a number."""
    path = tmp_path / "train.yaml"
    path.write_text("data:\n  task: x\noptim:\n  lr: 1e-4\n  batch_size: 3\nrun:\n  tensorboard: false\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.run.tensorboard) == (1e-4, 3, False)
    assert EvalConfig(task="x", batch_size=2).batch_size == 2
    with pytest.raises(ValidationError, match="expected a number, got false"):
        EvalConfig(task="x", batch_size=False)


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        ("data:\n  task: x\noptim:\n  batch_size: 8\n  lr: 1e-4\n  batch_size: 1\n", 6, "batch_size", 4),
        ("data:\n  task: x\ndata:\n  task: y\n", 3, "data", 1),
        ("data: {task: x, task: y}\n", 1, "task", 1),
    ],
)
def test_a_duplicate_yaml_key_is_refused_naming_key_and_line(tmp_path, text, line, key, first):
    """YAML loaders keep the last of two equal keys silently, so one of the two settings would vanish."""
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(
        ValueError, match=rf"train\.yaml:{line}: duplicate key '{key}' \(first on line {first}\)"
    ):
        TrainConfig.from_yaml(path)


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path):
    from diffmas.configs import read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("base: &b {lr: 1.0, steps: 2}\noptim:\n  <<: *b\n  lr: 0.5\n")
    assert read_yaml(path)["optim"] == {"lr": 0.5, "steps": 2}


def test_writer_settings_reach_the_rungs_with_writers_only(tmp_path):
    """A ladder's oracle warm-up, message loss and per-role adapters act on latent writers: the diffmas rungs get
    them, the rungs with one trained agent (single_sft, text_mas_sft) train as before."""
    training = {
        "lora": {"adapters": "per_role"},
        "method": {"oracle_warmup": {"start": 2, "end": 4}, "message_loss": 0.5},
        "optim": {"steps": 6},
    }
    cfg = _ladder(methods=["single_sft", "text_mas_sft", "diffmas_latents"], training=training)
    diffmas = _rung(cfg, tmp_path, RUNGS["diffmas_latents"].training)
    assert diffmas.lora.adapters == "per_role" and diffmas.method.message_loss == 0.5
    assert diffmas.method.oracle_warmup is not None and diffmas.method.oracle_warmup.end == 4
    for name in ("single_sft", "text_mas_sft"):
        rung = _rung(cfg, tmp_path, RUNGS[name].training)
        assert rung.lora.adapters == "shared" and rung.method.oracle_warmup is None, name
        # the shared budget still applies
        assert rung.method.message_loss == 0 and rung.optim.steps == 6, name
