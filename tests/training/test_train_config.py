"""The training config against run directories written before the composed config model (they resume), the
trainer's terminal lines (80 columns, metrics.jsonl keeps every field), and the training-method registry read where
method names used to be listed (adapters written before `solver_only` was recorded)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")


def _data(out: Path, method: str, **method_fields) -> dict:
    return {
        "data": {"task": ASSET, "split": "test", "eval_split": None, "n_train": 4},
        "method": {"train_method": method, "latent_steps": 1, "eval_max_new_tokens": 2, **method_fields},
        "optim": {"steps": 2, "batch_size": 2, "warmup_steps": 0},
        "run": {"out": str(out), "report_to": [], "save_every": 1},
    }


def _trainer(cfg: TrainConfig, width: int = 400) -> tuple[DiffMASTrainer, io.StringIO]:
    from rich.console import Console

    buf = io.StringIO()
    return DiffMASTrainer(cfg, backbone=tiny_backbone("llama"), console=Console(file=buf, width=width)), buf


def _stop_after_one(cfg: TrainConfig) -> None:
    data = cfg.model_dump()
    first, _ = _trainer(TrainConfig.model_validate({**data, "run": {**data["run"], "stop_after": 1}}))
    first.setup()
    assert first.train()["stopped_at"] == 1


def _as_written_before(ckpt_dir: Path) -> None:
    """Rewrite every checkpoint's config.yaml as the code before the composed config model saved it: without
    `model.attn_implementation`."""
    for path in ckpt_dir.glob("step-*/config.yaml"):
        saved = yaml.safe_load(path.read_text())
        del saved["model"]["attn_implementation"]
        path.write_text(yaml.safe_dump(saved, sort_keys=False))


@pytest.mark.parametrize("method", ["text_mas_sft", "diffmas"])
def test_a_run_saved_in_the_old_shape_resumes_with_its_upstream_budget(tmp_path, method):
    """A run written before the upstream default changed (128 then, for training) resumes from a YAML that sets
    no budget, and keeps the budget it was saved with (a text_mas_sft run's contexts were generated with it). The
    first part runs with a small budget (3 tokens) to keep the test fast: what matters is that the saved value
    is kept, not the default."""
    _stop_after_one(TrainConfig.model_validate(_data(tmp_path / "run", method, upstream_max_new_tokens=3)))
    _as_written_before(tmp_path / "run" / "checkpoints")
    cfg = TrainConfig.model_validate(_data(tmp_path / "run", method))
    assert "upstream_max_new_tokens" not in cfg.method.model_fields_set
    resumed, _ = _trainer(cfg)
    resumed.setup(resume=True)
    assert resumed.cfg.method.upstream_max_new_tokens == 3
    assert [r["step"] for r in resumed.train(resume=True)["history"]] == [2]
    assert (
        yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"]["upstream_max_new_tokens"]
        == 3
    )


def test_a_different_upstream_budget_set_explicitly_still_refuses_to_resume(tmp_path):
    _stop_after_one(
        TrainConfig.model_validate(_data(tmp_path / "run", "text_mas_sft", upstream_max_new_tokens=3))
    )
    _as_written_before(tmp_path / "run" / "checkpoints")
    changed = TrainConfig.model_validate(_data(tmp_path / "run", "text_mas_sft", upstream_max_new_tokens=4))
    with pytest.raises(ValueError, match="method.upstream_max_new_tokens"):
        _trainer(changed)[0].setup(resume=True)


def test_a_run_saved_today_keeps_comparing_the_budget_it_was_saved_with(tmp_path):
    """Only a run written before the default changed keeps its saved value; today's runs compare as they are."""
    _stop_after_one(
        TrainConfig.model_validate(_data(tmp_path / "run", "text_mas_sft", upstream_max_new_tokens=3))
    )
    unset = TrainConfig.model_validate(_data(tmp_path / "run", "text_mas_sft"))
    with pytest.raises(ValueError, match="method.upstream_max_new_tokens"):
        _trainer(unset)[0].setup(resume=True)


def test_a_latent_run_resumes_whatever_its_unused_upstream_budget(tmp_path):
    """diffmas generates no upstream text, so the budget is no part of what a resume must match."""
    _stop_after_one(TrainConfig.model_validate(_data(tmp_path / "run", "diffmas", upstream_max_new_tokens=3)))
    other = TrainConfig.model_validate(_data(tmp_path / "run", "diffmas", upstream_max_new_tokens=9))
    trainer, _ = _trainer(other)
    trainer.setup(resume=True)
    assert [r["step"] for r in trainer.train(resume=True)["history"]] == [2]


def test_log_lines_fit_80_columns_and_metrics_keep_every_field(tmp_path):
    data = _data(tmp_path / "run", "diffmas")
    data["data"]["eval_split"] = "test"
    data["data"]["n_eval"] = 2
    data["run"]["eval_at_start"] = True
    trainer, buf = _trainer(TrainConfig.model_validate(data), width=80)
    trainer.setup()
    trainer.train()
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [line for line in lines if line.startswith("step=")]
    assert len(logged) == len(rows)  # one terminal line per row: none wrapped onto a second line
    assert all(len(line) <= 80 for line in lines)
    step_rows = [r for r in rows if "loss" in r]
    assert set(step_rows[0]) >= {"loss", "grad_norm", "lr", "target_tokens", "target_tokens_per_s", "seconds"}
    assert any("eval_accuracy" in r and "eval_n" in r for r in rows)


def test_console_line_fits_80_columns_at_large_values():
    from diffmas.training.trainer import console_line

    row = {
        "step": 99_999, "loss": 12.3456, "grad_norm": 123.456, "lr": 4.99e-5, "target_tokens": 999_999,
        "target_tokens_per_s": 999_999.6, "seconds": 999.6,
    }  # fmt: skip
    line = console_line(row, 100_000)
    assert len(line) <= 80
    assert line == "step=99999/100000 loss=12.35 |g|=123.5 lr=4.99e-5 tok=1000k tok/s=1000k s=999.6"


@pytest.mark.parametrize("method", ["single_sft", "no_comm_sft"])
def test_an_adapter_without_solver_only_in_its_manifest_follows_the_method_registry(tmp_path, method):
    from diffmas.adapters import MANIFEST_FILE, SolverOnly, attach_adapter

    trainer, _ = _trainer(TrainConfig.model_validate(_data(tmp_path / "run", method)))
    trainer.setup()
    adapter = Path(trainer.train()["adapter"])
    manifest = json.loads((adapter / MANIFEST_FILE).read_text())
    del manifest["solver_only"]  # as manifests were written before it was recorded
    (adapter / MANIFEST_FILE).write_text(json.dumps(manifest))
    _, _, hook = attach_adapter(tiny_backbone("llama"), adapter)
    assert isinstance(hook, SolverOnly)


def test_every_training_method_answers_with_a_registered_inference_method():
    from diffmas.methods import METHODS
    from diffmas.methods.specs import TRAIN_METHODS
    from diffmas.training.specs import TRAIN_METHODS as REEXPORTED

    assert REEXPORTED is TRAIN_METHODS  # the old import path reads the same registry
    assert {
        name: spec.eval_method for name, spec in TRAIN_METHODS.items() if spec.eval_method not in METHODS
    } == {}


def test_a_config_of_the_old_shape_loads_with_one_deprecation_line(tmp_path):
    """`method.method` was the training method's key; a file written so loads as `method.train_method`."""
    new = _data(tmp_path, "single_sft")
    old = {**new, "method": {("method" if k == "train_method" else k): v for k, v in new["method"].items()}}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.warns(FutureWarning) as caught:
        cfg = TrainConfig.from_yaml(path)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert "method.train_method" in str(caught[0].message)
    assert cfg == TrainConfig.model_validate(new) and cfg.method.train_method == "single_sft"
    with pytest.raises(ValidationError, match="give train_method only"):
        TrainConfig.model_validate({**new, "method": {**new["method"], "method": "diffmas"}})


def test_a_comparisons_training_section_of_the_old_shape_loads_too():
    from diffmas.training.config import PartialTrainConfig

    with pytest.warns(FutureWarning, match=r"training\.method\.method is deprecated"):
        section = PartialTrainConfig.model_validate({"method": {"method": "single_sft"}})
    assert section.set_fields() == {"method": {"train_method": "single_sft"}}
