"""`run.report_to`: the trainer's rows go to accelerate's trackers (TensorBoard here) under metrics.jsonl's keys and
steps; unknown or missing trackers are refused before anything loads; the old `run.tensorboard` flag still loads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig, tracking
from diffmas.training.config import ConfigDeprecationWarning, PartialTrainConfig, merge_train_config

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")


def _cfg(out: Path, steps: int = 3, **run) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"task": ASSET, "split": "test", "eval_split": "test", "n_eval": 2},
            "method": {"latent_steps": 2, "eval_max_new_tokens": 4},
            "optim": {"steps": steps, "batch_size": 2, "lr": 5e-3, "warmup_steps": 1},
            "run": {"out": str(out), "save_every": 100, "eval_at_end": True, **run},
        }
    )


def _metrics(out: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as (step, value) series per key, as a tracker should have them."""
    series: dict[str, list[tuple[int, float]]] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in tracking.scalars(row).items():
            series.setdefault(key, []).append((row["step"], float(value)))
    return series


def _events(out: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_same(events: dict, metrics: dict) -> None:
    assert sorted(events) == sorted(metrics)
    for key, rows in metrics.items():
        assert [s for s, _ in events[key]] == [s for s, _ in rows], key
        assert [v for _, v in events[key]] == pytest.approx([v for _, v in rows], rel=1e-6), key


def test_tensorboard_gets_the_rows_of_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    trainer = DiffMASTrainer(_cfg(out, report_to=["tensorboard"]), backbone=tiny_backbone("llama"))
    trainer.setup()
    trainer.train()
    metrics = _metrics(out)
    assert {"loss", "grad_norm", "lr", "target_tokens_per_s", "eval_accuracy", "eval_n"} <= set(metrics)
    assert [s for s, _ in metrics["loss"]] == [1, 2, 3] and [s for s, _ in metrics["eval_accuracy"]] == [3]
    _assert_same(_events(out), metrics)
    assert trainer.accelerator.trackers == []  # closed when training ended


def test_a_resumed_run_plots_each_step_once(tmp_path, monkeypatch):
    """Killed after logging step 3 with the last checkpoint at 2, then resumed to 4: TensorBoard holds each step
    once, with metrics.jsonl's values (the events of step 3 before the kill are purged)."""
    out = tmp_path / "run"
    first = DiffMASTrainer(_cfg(out, 4, save_every=2, eval_at_end=False), backbone=tiny_backbone("llama"))
    first.setup()
    real_log = first._log

    def dying_log(row):
        real_log(row)
        if row["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(first, "_log", dying_log)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    again = DiffMASTrainer(_cfg(out, 4, save_every=2, eval_at_end=False), backbone=tiny_backbone("llama"))
    again.setup(resume=True)
    again.train(resume=True)
    metrics = _metrics(out)
    assert [s for s, _ in metrics["loss"]] == [1, 2, 3, 4]
    _assert_same(_events(out), metrics)


def test_report_to_none_writes_no_tracker_files(tmp_path):
    out = tmp_path / "run"
    trainer = DiffMASTrainer(
        _cfg(out, 1, report_to="none", eval_at_end=False), backbone=tiny_backbone("llama")
    )
    trainer.setup()
    trainer.train()
    assert not (out / "tensorboard").exists()
    assert (out / "metrics.jsonl").is_file()


@pytest.mark.parametrize(("tracker", "package"), [("wandb", "wandb"), ("comet_ml", "comet-ml")])
def test_a_tracker_that_is_not_installed_is_one_line_before_anything_loads(
    tmp_path, monkeypatch, tracker, package
):
    monkeypatch.setattr(tracking, "available_trackers", lambda: ["tensorboard"])
    out = tmp_path / "run"
    trainer = DiffMASTrainer(_cfg(out, report_to=["tensorboard", tracker]), backbone=tiny_backbone("llama"))
    with pytest.raises(ValueError) as e:
        trainer.setup()
    assert str(e.value) == f"run.report_to: {tracker} is not installed (pip install {package})"
    assert not out.exists()


def test_all_means_every_installed_tracker(monkeypatch):
    monkeypatch.setattr(tracking, "available_trackers", lambda: ["tensorboard", "mlflow"])
    assert tracking.require_trackers(["all"]) == ["tensorboard", "mlflow"]
    assert tracking.require_trackers([]) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("wandbb", "unknown tracker 'wandbb': report_to takes"),
        (["none", "wandb"], "'none' cannot be combined"),
        (3, "expected a tracker name"),
    ],
)
def test_report_to_errors_name_the_field(tmp_path, value, message):
    with pytest.raises(ValidationError, match=message) as e:
        _cfg(tmp_path, report_to=value)
    assert "run.report_to" in str(e.value)


def test_report_to_forms():
    read = lambda v: _cfg(Path("x"), report_to=v).run.report_to  # noqa: E731
    assert read("none") == [] and read(None) == [] and read([]) == []
    assert read("TensorBoard") == ["tensorboard"] and read("all") == ["all"]
    assert read(["wandb", "mlflow", "wandb"]) == ["wandb", "mlflow"]
    assert _cfg(Path("x")).run.report_to == ["tensorboard"]  # the default


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ({"tensorboard": False}, []),
        ({"tensorboard": True}, ["tensorboard"]),
        ({"tensorboard": False, "report_to": ["tensorboard", "wandb"]}, ["wandb"]),
        ({"tensorboard": True, "report_to": "none"}, ["tensorboard"]),
    ],
)
def test_the_old_tensorboard_flag_still_loads_with_a_deprecation_message(tmp_path, run, expected):
    with pytest.warns(ConfigDeprecationWarning, match="run.tensorboard is deprecated: write run.report_to: "):
        cfg = _cfg(tmp_path, **run)
    assert cfg.run.report_to == expected
    assert cfg.run.tensorboard == ("tensorboard" in expected)
    assert "tensorboard:" not in cfg.to_yaml()  # saved in the new form
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TrainConfig.model_validate(cfg.model_dump()) == cfg


def test_a_comparisons_training_section_still_carries_the_old_flag():
    patch = PartialTrainConfig.model_validate({"run": {"tensorboard": True}})
    with pytest.warns(ConfigDeprecationWarning):
        cfg = merge_train_config({"data": {"task": "x"}, "run": {"report_to": []}}, patch)
    assert cfg.run.report_to == ["tensorboard"]
    assert PartialTrainConfig.model_validate({"run": {"report_to": "none"}}).set_fields() == {
        "run": {"report_to": []}
    }


def test_the_tracker_names_are_accelerates():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    assert sorted(tracking.known_trackers()) == sorted(LOGGER_TYPE_TO_CLASS)


def test_the_config_reaches_the_trackers_as_scalars():
    flat = tracking.flat_config(_cfg(Path("x")).model_dump())
    assert flat["optim.lr"] == 5e-3 and flat["run.report_to"] == '["tensorboard"]'
    assert all(v is None or isinstance(v, str | int | float | bool) for v in flat.values())
