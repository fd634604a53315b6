"""A user's mistakes end in one line that names the fix, fast, with no traceback and no library retry noise; and the
eval CLI reaches the settings a user needs (task arguments, one output folder per task and method, CPU checks for
the compiled answer, --version, defaults in --help, the root's flags after the subcommand)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from diffmas.cli import app, hoist_global_flags, main

ROOT = Path(__file__).parents[2]
ASSET = ROOT / "tests" / "assets" / "arith.jsonl"
ARC = ROOT / "tests" / "assets" / "tasks" / "arc_challenge.jsonl"


def _invoke(*args: str, **kw):
    return CliRunner().invoke(app, ["--verbose", *args], catch_exceptions=False, **kw)


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """The hub switched off (HF_HUB_OFFLINE=1, as read by huggingface_hub and datasets) and an empty hub cache."""
    import datasets

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_a_hub_id_that_does_not_exist_is_one_line_at_once(tmp_path, no_hub):
    started = time.perf_counter()
    out = tmp_path / "eval"
    result = _invoke("eval", "--task", str(ASSET), "--model", "no-such-org/no-such-model", "--out", str(out))
    assert time.perf_counter() - started < 20
    assert result.exit_code == 1
    (line,) = _lines(result.output)
    assert "no-such-org/no-such-model" in line and "HF_HUB_OFFLINE" in line and "local folder" in line
    assert "Traceback" not in result.output and not (out / "eval_config.json").exists()


def test_an_unreachable_hub_is_one_request_without_retries(tmp_path, monkeypatch, caplog):
    """A hub that refuses connections (a closed local port): no retry loop, no "Retrying in" lines."""
    from diffmas.backbones import ModelUnavailable, load_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="cannot be reached") as e:
        load_backbone("no-such-org/no-such-model")
    assert time.perf_counter() - started < 10
    assert "\n" not in str(e.value) and str(tmp_path / "no-such-org" / "no-such-model") in str(e.value)
    assert "Retrying" not in caplog.text


def test_an_unavailable_dataset_names_the_flag_and_the_flag_works(tmp_path, no_hub, tiny_llama_dir):
    common = ("eval", "--task", "arc-challenge", "--model", str(tiny_llama_dir), "--method", "single")
    bad = _invoke(*common, "--out", str(tmp_path / "bad"))
    assert bad.exit_code == 1
    (line,) = _lines(bad.output)
    assert "allenai/ai2_arc" in line and "--task-arg path=FILE" in line
    out = tmp_path / "arc"
    good = _invoke(
        *common, "--task-arg", f"path={ARC}", "--limit", "2", "--max-new-tokens", "2", "--out", str(out)
    )
    assert good.exit_code == 0, good.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["config"]["task_args"] == {"path": str(ARC)}


def test_a_glued_yaml_mapping_in_an_override_is_refused_naming_both_spellings(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {{task: secret}}\nrun: {{out: {tmp_path / 'run'}}}\n")
    result = _invoke("train", str(config), "data.task_args={agents:2}")
    assert result.exit_code == 2
    (line,) = _lines(result.output)
    assert "{agents: 2}" in line and "data.task_args.agents=2" in line
    assert not (tmp_path / "run").exists()


def test_a_task_argument_the_task_does_not_take_is_one_line_naming_those_it_takes(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {{task: secret, task_args: {{agentz: 2}}}}\nrun: {{out: {tmp_path / 'run'}}}\n")
    train = _invoke("train", str(config))
    evaluate = _invoke("eval", "--task", "secret", "--task-arg", "agentz=2", "--out", str(tmp_path / "e"))
    for result in (train, evaluate):
        assert result.exit_code == 2
        (line,) = _lines(result.output)
        assert "'agentz'" in line and "agents" in line.split("it takes:")[1]
    assert not (tmp_path / "run").exists() and not (tmp_path / "e").exists()


def test_eval_reads_the_task_arguments_an_adapter_was_trained_with(tmp_path, tiny_llama_dir):
    from diffmas.testing import tiny_backbone
    from diffmas.training import DiffMASTrainer, TrainConfig

    cfg = TrainConfig.model_validate(
        {
            "data": {
                "task": "secret",
                "task_args": {"agents": 2, "n_train": 8, "n_test": 4},
                "eval_split": None,
            },
            "method": {"latent_steps": 1, "eval_max_new_tokens": 2, "roles": "comm2"},
            "optim": {"steps": 1, "batch_size": 2, "warmup_steps": 0},
            "run": {"out": str(tmp_path / "run"), "report_to": [], "eval_at_end": False},
        }
    )
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
    trainer.setup()
    adapter = trainer.train()["adapter"]
    common = (
        "eval",
        "--task",
        "secret",
        "--model",
        str(tiny_llama_dir),
        "--adapter",
        adapter,
        "--limit",
        "2",
    )
    out = tmp_path / "eval"
    result = _invoke(*common, "--max-new-tokens", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["task_args"] == {"agents": 2, "n_train": 8, "n_test": 4}
    # a flag given on the command line wins over the manifest, key by key
    over = _invoke(*common, "--max-new-tokens", "2", "--task-arg", "n_test=3", "--out", str(tmp_path / "e3"))
    assert over.exit_code == 0, over.output
    task_args = json.loads((tmp_path / "e3" / "summary.json").read_text())["config"]["task_args"]
    assert task_args == {"agents": 2, "n_train": 8, "n_test": 3}


def test_eval_writes_one_folder_per_task_and_method_by_default(tmp_path, monkeypatch, tiny_llama_dir):
    monkeypatch.chdir(tmp_path)
    common = ("--model", str(tiny_llama_dir), "--limit", "1", "--max-new-tokens", "2")
    for task, method in ((str(ASSET), "single"), (str(ARC), "single"), (str(ASSET), "no_comm")):
        task_args = ("--task-arg", f"path={ARC}") if task == str(ARC) else ()
        name = "arc-challenge" if task == str(ARC) else task
        result = _invoke("eval", "--task", name, *task_args, "--method", method, *common)
        assert result.exit_code == 0, result.output
    for folder in ("arith/single", "arc-challenge/single", "arith/no_comm"):
        assert (tmp_path / "runs" / "eval" / folder / "summary.json").is_file(), folder


def test_compile_reduce_overhead_on_cpu_is_refused_and_static_cache_warns(tmp_path, tiny_llama_dir):
    common = (
        "eval",
        "--task",
        str(ASSET),
        "--model",
        str(tiny_llama_dir),
        "--method",
        "single",
        "--limit",
        "1",
    )
    bad = _invoke(*common, "--compile", "reduce-overhead", "--out", str(tmp_path / "bad"))
    assert bad.exit_code == 2
    (line,) = _lines(bad.output)
    assert "CUDA graphs" in line and "--device cuda" in line and "--compile default" in line
    assert not (tmp_path / "bad").exists()
    static = _invoke(*common, "--max-new-tokens", "2", "--static-cache", "--out", str(tmp_path / "static"))
    assert static.exit_code == 0 and "warning: --static-cache" in static.output


def test_version_and_defaults_in_help():
    from diffmas import __version__

    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith(f"diffmas {__version__}")
    text = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output
    flat = re.sub(r"[\s│]+", " ", text)
    for default in ("default: latent_mas, or what --adapter was trained for", "default: 10, or --adapter's",
                    "default: 256", "default: runs/eval/<task>/<method>", "--task-arg"):  # fmt: skip
        assert default in flat, default


def test_the_root_flags_are_taken_after_the_subcommand(monkeypatch, capsys):
    assert hoist_global_flags(["eval", "--task", "x", "--verbose", "--", "--weak-sandbox"]) == [
        "--verbose", "eval", "--task", "x", "--", "--weak-sandbox",
    ]  # fmt: skip
    monkeypatch.delenv("DIFFMAS_SANDBOX", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["tasks", "--verbose", "--weak-sandbox"])
    assert e.value.code == 0
    import os

    assert os.environ.get("DIFFMAS_SANDBOX") == "weak"
    assert "secret" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["tasks", "--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("diffmas ")


def test_quiet_mode_silences_the_hubs_retry_lines():
    """The hub logs "Retrying in 1s [Retry 1/5]" as warnings of its own logger: the CLI's quiet mode (not
    --verbose) hides them, whether huggingface_hub was imported before it or after."""
    import subprocess
    import sys

    code = """
import logging, sys
{before}
from diffmas.terminal import quiet_libraries
quiet_libraries()
from huggingface_hub.utils import logging as hub_logging
hub_logging.get_logger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
"""
    import diffmas

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(diffmas.__file__).parents[1])}  # this diffmas
    for before in ("import huggingface_hub", ""):
        quiet = subprocess.run(
            [sys.executable, "-c", code.format(before=before)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert quiet.returncode == 0, quiet.stderr[-2000:]
        assert "Retrying" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code.format(before="").replace("quiet_libraries()\n", "")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "Retrying in 1s" in loud.stderr  # the check above can fail: without quieting, the line shows


def test_lm_eval_is_a_subcommand_that_hands_every_flag_to_the_harness():
    result = CliRunner().invoke(app, ["lm-eval", "--help"])
    assert result.exit_code == 0
    assert "--model_args" in result.output and "--include_path" in result.output  # the harness's own help
    assert " lm-eval " in CliRunner().invoke(app, ["--help"]).output
