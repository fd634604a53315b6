"""`diffmas compare`: config validation, overrides, an idempotent run on a tiny local model, and the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from diffmas.compare import CompareConfig, CompareRecipe
from diffmas.configs import apply_overrides, read_yaml
from diffmas.testing import tiny_backbone

ASSET = Path(__file__).parent / "assets" / "arith.jsonl"


def _tiny_model_dir(tmp_path: Path) -> Path:
    """The tiny in-process model saved as a local HF folder, as a user would pass it to `model:`."""
    model_dir = tmp_path / "tiny"
    tiny = tiny_backbone("llama")
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    return model_dir


def test_overrides_parse_values_as_yaml():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=3", "a.c=[0, 2]", "d=true", "e.f=x"])
    assert data == {"a": {"b": 3, "c": [0, 2]}, "d": True, "e": {"f": "x"}}
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["nope"])
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_read_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml: invalid YAML"):
        read_yaml(bad)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task": "x", "methods": ["nope"]}, "unknown methods"),
        ({"task": "x", "inference": {"latent_step": 3}}, "latent_step"),
        ({"task": "x", "inference": {"realign": "foo"}}, "unknown realign"),
        (
            {"task": "x", "sweeps": [{"key": "grad_mode", "values": ["full"], "methods": ["latent_mas"]}]},
            "trained",
        ),
        ({"task": "x", "n_test": "many"}, "n_test"),
        ({"methods": ["single"]}, "task"),
        ({"task": "x", "training": {"optim": {"lr": "fast"}}}, "optim.lr"),
    ],
)
def test_invalid_configs_name_the_key(data, message):
    with pytest.raises(ValidationError, match=message):
        CompareConfig.model_validate(data)


def test_shipped_presets_and_configs_validate():
    from importlib import resources

    preset = resources.files("diffmas").joinpath("presets/demo.yaml")
    with resources.as_file(preset) as p:
        CompareConfig.from_yaml(p)
    root = Path(__file__).parents[1] / "configs"
    ladders = [root / "demo.yaml", root / "demo_paper.yaml"] + sorted(root.glob("compare_*.yaml"))
    ladders += sorted(root.glob("paper/*.yaml")) + sorted(root.glob("comm/*.yaml"))
    assert len(ladders) >= 27
    for path in ladders:
        CompareConfig.from_yaml(path)
    from diffmas.training import TrainConfig

    for path in sorted(root.glob("train_*.yaml")):
        TrainConfig.from_yaml(path)


def test_training_free_ladder_runs_reuses_and_reports(tmp_path):
    model_dir = _tiny_model_dir(tmp_path)
    cfg = CompareConfig.model_validate(
        {
            "model": str(model_dir),
            "task": str(ASSET),
            "test_split": "test",
            "n_test": 3,
            "methods": ["single", "latent_mas", "text_mas"],
            "inference": {
                "latent_steps": 2,
                "max_new_tokens": 4,
                "upstream_max_new_tokens": 3,
                "batch_size": 2,
            },
            "sweeps": [{"key": "latent_steps", "values": [0, 1], "methods": ["latent_mas"]}],
        }
    )
    run = tmp_path / "run"
    recipe = CompareRecipe(cfg, run)
    results = recipe.run()
    assert list(results["methods"]) == ["single", "latent_mas", "text_mas"]
    assert all(s["n"] == 3 for s in results["methods"].values())
    assert [p["value"] for p in results["sweeps"]["latent_mas (latent_steps)"]] == [0, 1]
    written = recipe.report()
    assert written["accuracy"].stat().st_size > 0 and written["sweep"].exists()
    report = written["markdown"].read_text()
    assert re.search(r"^\| latent_mas +\|", report, re.M)
    assert "3 test items, the whole training split." in report  # n_train: null is said in words, not "None"
    # A second call reuses every finished evaluation: the records are untouched.
    before = (run / "eval" / "latent_mas" / "samples.jsonl").read_text()
    again = CompareRecipe(cfg, run).run()
    assert (run / "eval" / "latent_mas" / "samples.jsonl").read_text() == before
    assert again["methods"]["single"]["accuracy"] == results["methods"]["single"]["accuracy"]
    assert json.loads((run / "results.json").read_text())["n_test"] == 3


def test_run_dir_of_another_comparison_is_refused(tmp_path):
    model_dir = _tiny_model_dir(tmp_path)
    base = {"model": str(model_dir), "task": str(ASSET), "methods": ["single"], "n_test": 1}
    CompareRecipe(CompareConfig.model_validate(base), tmp_path / "run").setup()
    other = CompareConfig.model_validate({**base, "n_test": 2})
    with pytest.raises(ValueError, match="different comparison"):
        CompareRecipe(other, tmp_path / "run").setup()


def test_communication_ladder_controls_reuse_adapters_and_carry_the_channel(tmp_path):
    """`donor_latents` evaluates `diffmas_latents`'s adapter and `latent_donor` `diffmas`'s (trained once); the channel reaches training and eval;
    text rungs use the capped and the wide upstream budgets."""
    model_dir = _tiny_model_dir(tmp_path)
    cfg = CompareConfig.model_validate(
        {
            "model": str(model_dir),
            "task": "secret",
            "task_args": {"agents": 2, "n_train": 8, "n_test": 4},
            "roles": "comm2",
            "n_test": 4,
            "methods": [
                "no_comm",
                "text_mas",
                "text_mas_wide",
                "diffmas",
                "latent_donor",
                "diffmas_latents",
                "donor_latents",
                "single_latent",
            ],
            "inference": {
                "latent_steps": 1,
                "max_new_tokens": 3,
                "upstream_max_new_tokens": 1,
                "wide_upstream_max_new_tokens": 3,
                "batch_size": 2,
            },
            "training": {"optim": {"steps": 2, "batch_size": 2}, "method": {"eval_max_new_tokens": 3}},
        }
    )
    run = tmp_path / "run"
    results = CompareRecipe(cfg, run).run()
    assert sorted(p.name for p in (run / "train").iterdir()) == [
        "diffmas",
        "diffmas_latents",
        "single_latent",
    ]
    latent_donor = json.loads((run / "eval" / "latent_donor" / "eval_config.json").read_text())
    assert latent_donor["method"] == "latent_donor" and latent_donor.get("channel", "full") == "full"
    assert latent_donor["adapter"].endswith("train/diffmas/adapter")
    manifest = json.loads(
        (run / "train" / "diffmas_latents" / "adapter" / "diffmas_adapter.json").read_text()
    )
    assert manifest["channel"] == "latents"
    for rung in ("diffmas_latents", "donor_latents"):
        saved = json.loads((run / "eval" / rung / "eval_config.json").read_text())
        assert saved["channel"] == "latents"
        assert saved["adapter"].endswith("train/diffmas_latents/adapter")
    assert json.loads((run / "eval" / "donor_latents" / "eval_config.json").read_text())["method"] == "donor"
    tokens = {r: results["methods"][r]["mean_generated_tokens"] for r in ("text_mas", "text_mas_wide")}
    assert tokens["text_mas"] < tokens["text_mas_wide"]
    assert "chance_rate" in results["methods"]["no_comm"] and "majority_rate" in results["methods"]["no_comm"]


def test_demo_sentence_states_the_measured_rates():
    from diffmas.cli.compare_cmd import channel_sentence

    results = {
        "methods": {
            "diffmas": {"accuracy": 0.97, "chance_rate": 0.125},
            "text_mas_sft": {"accuracy": 0.12},
            "donor": {"accuracy": 0.02},
        }
    }
    sentence = channel_sentence(results)
    assert sentence.startswith("In the full channel the trained Solver reads the sender's context")
    assert "diffmas answered 97% of the test items" in sentence
    assert "12% for a trained reader of the few tokens the untrained sender writes (text_mas_sft)" in sentence
    assert "2% for the trained Solver reading another question's trace (donor)" in sentence
    assert "latent channel" not in sentence  # a full-channel result is not called a latent channel
    assert "No latents-only rung ran" in sentence
    assert sentence.endswith("A uniform guess scores 12.5%.")
    assert channel_sentence({"methods": {"single": {"accuracy": 0.5}}}) is None


def test_the_sentence_names_the_latents_only_result_separately():
    from diffmas.cli.compare_cmd import channel_sentence

    results = {
        "methods": {
            "diffmas": {"accuracy": 1.0, "chance_rate": 0.125},
            "diffmas_latents": {"accuracy": 0.14, "chance_rate": 0.125},
            "donor_latents": {"accuracy": 0.12, "chance_rate": 0.125},
        }
    }
    sentence = channel_sentence(results)
    assert (
        "In the latents-only channel the Solver sees the sender's latent columns and never its prompt"
        in sentence
    )
    assert "diffmas_latents answered 14%" in sentence
    assert "12% for the trained Solver reading another question's latents (donor_latents)" in sentence
    assert "No latents-only rung" not in sentence
    assert "through the latent columns" not in sentence  # 14% is not above chance


def test_the_latents_sentence_says_the_latents_carry_the_answer_only_when_measured():
    from diffmas.cli.compare_cmd import channel_sentence

    def sentence(own_low: float, donor: float) -> str:
        return channel_sentence(
            {
                "methods": {
                    "single_sft": {"accuracy": 0.98, "chance_rate": 0.125},
                    "diffmas_latents": {"accuracy": 0.9, "ci_low": own_low, "chance_rate": 0.125},
                    "donor_latents": {"accuracy": donor, "chance_rate": 0.125},
                }
            }
        )

    shown = sentence(0.8, 0.05)
    assert "98% for the trained single agent that sees every view, the skyline (single_sft)" in shown
    assert "through the latent columns" in shown and "full channel" not in shown
    assert "through the latent columns" not in sentence(0.1, 0.05)  # own latents not above chance
    assert "through the latent columns" not in sentence(0.8, 0.5)  # another question's latents do as well


def test_quick_demo_overrides_give_valid_configs():
    """`diffmas demo --quick` (and `--paper --quick`) must validate: its step count is below the presets' warmup."""
    from importlib import resources

    from diffmas.cli.compare_cmd import QUICK, QUICK_PAPER

    for name, quick in (("demo.yaml", QUICK), ("demo_paper.yaml", QUICK_PAPER)):
        with resources.as_file(resources.files("diffmas").joinpath(f"presets/{name}")) as path:
            cfg = CompareConfig.from_yaml(path, quick)
        assert cfg.n_test == 16 and cfg.training["optim"]["steps"] == 4


def test_the_channel_sentence_is_for_ladders_whose_items_split_views():
    """A task without private views (the paper-style ladder) has no sender's context to speak of."""
    from types import SimpleNamespace

    from diffmas.cli.compare_cmd import _splits_views

    comm = SimpleNamespace(
        task="secret", task_args={"agents": 2, "n_train": 10, "n_test": 10}, test_split="test", n_test=5
    )
    plain = SimpleNamespace(task="gym:ransom_note", task_args={"size": 10}, test_split="test", n_test=5)
    assert _splits_views(comm) and not _splits_views(plain)
