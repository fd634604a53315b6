"""The `diffmas` command line on tiny local models: every command is registered, errors come before any progress
display and leave nothing behind, and the libraries' noise is silenced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from diffmas.cli import app

ROOT = Path(__file__).parents[2]
ASSET = ROOT / "tests" / "assets" / "arith.jsonl"
BAR = "━"  # rich's progress bar


def _invoke(*args: str):
    # --verbose: the quieting filters are process-wide, so tests of the commands leave them off (see below)
    return CliRunner().invoke(app, ["--verbose", *args], catch_exceptions=False)


def test_every_command_is_registered():
    out = CliRunner().invoke(app, ["--help"]).output
    for command in ("eval", "train", "compare", "demo", "report", "tasks", "bench"):
        assert f" {command} " in out, command


def test_bench_runs_the_suite_of_the_checkout(monkeypatch):
    calls = []

    def fake_run(cmd, cwd, env):
        calls.append((cmd, Path(cwd), env))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    result = _invoke("bench", "--model", "tiny-qwen2", "--quick")
    assert result.exit_code == 0, result.output
    ((cmd, cwd, env),) = calls
    assert cmd[1:] == ["-m", "bench.run_all", "--model", "tiny-qwen2", "--quick"]
    assert cwd == ROOT and (cwd / "bench" / "run_all.py").is_file()
    assert env["OMP_WAIT_POLICY"] and str(ROOT) in env["PYTHONPATH"]


def test_an_eval_that_fails_while_setting_up_prints_the_error_alone_and_leaves_no_config(
    tmp_path, tiny_llama_dir
):
    out = tmp_path / "eval"
    bad = _invoke("eval", "--task", "nonexistent", "--model", str(tiny_llama_dir), "--out", str(out))
    assert bad.exit_code != 0
    assert "unknown task 'nonexistent'" in bad.output
    assert BAR not in bad.output and "0/?" not in bad.output  # no progress display before the error
    assert not (out / "eval_config.json").exists() and not (out / "samples.jsonl").exists()
    fixed = _invoke(
        "eval", "--task", str(ASSET), "--model", str(tiny_llama_dir), "--method", "single", "--limit", "2",
        "--max-new-tokens", "2", "--out", str(out),
    )  # fmt: skip
    assert fixed.exit_code == 0, fixed.output  # the same directory, once the input is fixed
    assert json.loads((out / "eval_config.json").read_text())["method"] == "single"
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2


def test_an_eval_with_a_missing_model_leaves_no_config(tmp_path):
    out = tmp_path / "eval"
    bad = _invoke("eval", "--task", str(ASSET), "--model", str(tmp_path / "no-model"), "--out", str(out))
    assert bad.exit_code != 0 and BAR not in bad.output
    assert not (out / "eval_config.json").exists()


def test_invalid_train_config_names_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("optim: {steps: -1}\n")
    result = _invoke("train", str(config))
    assert result.exit_code == 2 and "bad.yaml" in result.output


def test_a_second_train_on_a_run_out_in_use_is_refused_in_one_line(tmp_path):
    """While one run holds run.out (the lock `diffmas train` takes), a second is refused before loading anything,
    with one line naming the directory and the holder, and writes nothing there."""
    import os

    from diffmas.records import locked_dir

    out = tmp_path / "run"
    out.mkdir()
    config = tmp_path / "train.yaml"
    config.write_text(  # a model that is not there: without the lock, the run fails fast at loading it
        f"data: {{task: {ASSET}, split: test}}\nmodel: {{name: {tmp_path / 'no-model'}}}\n"
        f"optim: {{steps: 1}}\nrun: {{out: {out}, report_to: none}}\n"
    )
    with locked_dir(out, "run.out"):
        result = _invoke("train", str(config))
    assert result.exit_code == 2
    said = " ".join(result.output.split())  # one message, however the console wraps it
    assert said.startswith(f"error: run.out {out} is in use by another run (pid {os.getpid()})"), said
    assert said.endswith("wait for it to finish or choose another directory") and "Traceback" not in said
    assert sorted(p.name for p in out.iterdir()) == [".diffmas.lock"]


def test_tasks_lists_the_registered_tasks():
    result = _invoke("tasks")
    assert result.exit_code == 0
    assert "secret" in result.output and "gsm8k-100" in result.output


def test_quiet_libraries_silences_loading_bars_and_deprecations_but_not_ours(tiny_llama_dir):
    """In a fresh interpreter, as the CLI runs: no "Loading weights" bar, no library deprecation warning; a
    warning of our own still shows."""
    code = f"""
import warnings
from diffmas.terminal import quiet_libraries
quiet_libraries()
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained({str(tiny_llama_dir)!r})
warnings.warn("a library notice", FutureWarning)
from diffmas.evaluation import ContextLengthWarning
warnings.warn("ours", ContextLengthWarning)
"""
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Loading weights" not in proc.stderr
    assert "a library notice" not in proc.stderr
    assert "ours" in proc.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code.replace("quiet_libraries()\n", "")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "Loading weights" in loud.stderr  # the check above can fail: without quieting, the bar is there


def test_eval_takes_the_static_cache_and_a_compile_mode_and_names_a_bad_mode(tmp_path, tiny_llama_dir):
    common = ("--task", str(ASSET), "--model", str(tiny_llama_dir), "--method", "single", "--limit", "2")
    plain = _invoke("eval", *common, "--max-new-tokens", "3", "--out", str(tmp_path / "plain"))
    static = _invoke(
        "eval", *common, "--max-new-tokens", "3", "--static-cache", "--out", str(tmp_path / "static")
    )
    assert plain.exit_code == 0 and static.exit_code == 0, static.output
    rows = [
        [json.loads(line)["output"] for line in (tmp_path / d / "samples.jsonl").read_text().splitlines()]
        for d in ("plain", "static")
    ]
    assert rows[0] == rows[1]
    assert json.loads((tmp_path / "static" / "summary.json").read_text())["config"]["static_cache"] is True
    bad = _invoke("eval", *common, "--compile", "fastest", "--out", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "compile" in bad.output


def test_eval_batches_by_length_unless_told_not_to(tmp_path, tiny_llama_dir):
    common = ("--task", str(ASSET), "--model", str(tiny_llama_dir), "--method", "single", "--limit", "3")
    common += ("--max-new-tokens", "2", "--batch-size", "2")
    for flag, expected in (("--group-by-length", True), ("--no-group-by-length", False)):
        result = _invoke("eval", *common, flag, "--out", str(tmp_path / flag))
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / flag / "summary.json").read_text())
        assert summary["config"]["group_by_length"] is expected
