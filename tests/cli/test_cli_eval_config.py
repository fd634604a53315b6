"""`diffmas eval [CONFIG] [key=value ...] [--flags]`: an evaluation from a config file and overrides, as train and
compare take theirs; the flags stay as shortcuts and win over the file and the overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffmas.cli import app
from diffmas.cli.eval_cmd import eval_settings

ROOT = Path(__file__).parents[2]
ASSET = ROOT / "tests" / "assets" / "arith.jsonl"


def _invoke(*args: str):
    return CliRunner().invoke(app, ["--verbose", *args], catch_exceptions=False)


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_file_then_overrides_then_flags(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("task: arith\ntop_k: 3\nlimit: 4\ntask_args: {seed: 1, n: 2}\n")
    got = eval_settings(str(config), ["limit=2", "task_args.n=5"], {"top_k": 7, "task_args": {"seed": 9}})
    assert got == {"task": "arith", "top_k": 7, "limit": 2, "task_args": {"seed": 9, "n": 5}}
    assert eval_settings("task=arith", ["top_p=0.5"], {}) == {"task": "arith", "top_p": 0.5}  # no file


def test_an_eval_from_a_config_file_with_overrides_and_a_flag(tmp_path, tiny_llama_dir):
    config = tmp_path / "eval.yaml"
    out = tmp_path / "out"
    config.write_text(
        f"task: {ASSET}\nmodel: {tiny_llama_dir}\nmethod: single\nlimit: 3\nmax_new_tokens: 2\n"
        f"temperature: 0.5\ntop_k: 3\nout: {out}\n"
    )
    result = _invoke("eval", str(config), "limit=2", "top_k=5", "seed=4", "--top-k", "7", "--group-by-length")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "summary.json").read_text())["config"]
    assert (saved["method"], saved["limit"], saved["top_k"], saved["seed"]) == ("single", 2, 7, 4)
    assert saved["temperature"] == 0.5 and saved["top_p"] == 0.95  # from the file; the default
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2


def test_flags_at_their_default_do_not_undo_the_file(tmp_path, tiny_llama_dir):
    """`--seed 0` is the default: written on the command line it still wins over the file; left out, the file's
    seed holds."""
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"task: {ASSET}\nmodel: {tiny_llama_dir}\nmethod: single\nlimit: 1\nmax_new_tokens: 2\nseed: 3\n"
    )
    for flags, seed in (((), 3), (("--seed", "0"), 0)):
        out = tmp_path / f"out{seed}"
        result = _invoke("eval", str(config), f"out={out}", *flags)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "summary.json").read_text())["config"]["seed"] == seed


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("limit=2",), ["no task", "--task"]),
        (("task=secret", "task.x=2"), ["'task' is not a section"]),
        (("task=secret", "task_args={agents:2}"), ["{agents: 2}", "task_args.agents=2"]),
        (("task=secret", "nope"), ["not of the form key=value"]),
    ],
)
def test_bad_settings_are_one_line(tmp_path, args, words):
    result = _invoke("eval", *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    (line,) = _lines(result.output)
    assert all(w in line for w in words), line
    assert not (tmp_path / "out").exists()


def test_an_unknown_key_in_the_file_names_it_and_the_file(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("task: secret\ntop_kk: 3\n")
    result = _invoke("eval", str(config), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "top_kk" in result.output and "eval.yaml" in result.output
    missing = _invoke("eval", str(tmp_path / "missing.yaml"))
    assert missing.exit_code == 2 and "missing.yaml" in missing.output


def test_help_shows_the_config_argument_and_the_flag_defaults():
    out = CliRunner().invoke(app, ["eval", "--help"], terminal_width=200).output
    assert "[CONFIG] [KEY=VALUE]..." in out
    assert "0.95" in out and "smollm2-135m" in out


def test_every_flag_default_is_the_eval_configs():
    """The flags' defaults shown in --help are EvalConfig's (a flag left out takes EvalConfig's default)."""
    import typer.main

    from diffmas.evaluation import EvalConfig

    command = typer.main.get_command(app).commands["eval"]  # type: ignore[attr-defined]
    names = {"compile_mode": "compile", "task_arg": "task_args", "template_arg": "chat_template_kwargs"}
    checked = 0
    for param in command.params:
        field = EvalConfig.model_fields.get(names.get(param.name, param.name))
        if field is None or param.default is None or param.name in ("task_arg", "template_arg", "overrides"):
            continue
        assert str(param.default) == str(field.get_default(call_default_factory=True)), param.name
        checked += 1
    assert checked >= 10
