"""`diffmas eval --adapter`: method, latent steps, realign, channel and roles come from the adapter's manifest;
a flag that contradicts it is an error naming both values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffmas.evaluation import resolve_adapter_settings

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")
MANIFEST = {
    "method": "diffmas", "eval_method": "latent_mas", "channel": "latents", "latent_steps": 4,
    "realign": "norm", "config": {"method": {"roles": "comm"}},
}  # fmt: skip


def _adapter(tmp_path, **changes) -> str:
    path = tmp_path / "adapter"
    path.mkdir()
    (path / "diffmas_adapter.json").write_text(json.dumps({**MANIFEST, **changes}), encoding="utf-8")
    return str(path)


def _unset() -> dict:
    return dict(method=None, latent_steps=None, realign=None, channel=None, roles=None)


def test_unset_settings_come_from_the_manifest(tmp_path):
    got = resolve_adapter_settings(_adapter(tmp_path), _unset())
    assert got == {
        "method": "latent_mas",
        "latent_steps": 4,
        "realign": "norm",
        "channel": "latents",
        "roles": "comm",
        "show_prefix": False,
        "latent_layer": None,
    }


def test_without_an_adapter_the_defaults_hold():
    got = resolve_adapter_settings(None, _unset())
    assert got == {
        "method": "latent_mas",
        "latent_steps": 10,
        "realign": "ridge",
        "channel": "full",
        "roles": None,
        "show_prefix": False,
        "latent_layer": None,
    }


def test_how_the_trace_is_read_comes_from_the_manifest(tmp_path):
    """An adapter trained with the shown prefix and a mid-layer latent is evaluated reading the trace alike."""
    adapter = _adapter(tmp_path, show_prefix=True, latent_layer=5)
    got = resolve_adapter_settings(adapter, _unset())
    assert (got["show_prefix"], got["latent_layer"]) == (True, 5)
    with pytest.raises(ValueError, match="trained with latent_layer 5 but the evaluation asks for 7"):
        resolve_adapter_settings(adapter, {**_unset(), "latent_layer": 7})


def test_a_contradicting_setting_names_both_values(tmp_path):
    with pytest.raises(ValueError, match="trained with latent_steps 4 but the evaluation asks for 10"):
        resolve_adapter_settings(_adapter(tmp_path), {**_unset(), "latent_steps": 10})


def test_the_donor_control_may_read_a_latent_adapter(tmp_path):
    assert resolve_adapter_settings(_adapter(tmp_path), {**_unset(), "method": "donor"})["method"] == "donor"


def test_a_non_latent_adapter_leaves_latent_settings_alone(tmp_path):
    adapter = _adapter(tmp_path, method="single_sft", eval_method="single", channel="full")
    got = resolve_adapter_settings(adapter, {**_unset(), "latent_steps": 7})
    assert got["method"] == "single" and got["latent_steps"] == 7


def test_cli_takes_the_manifest_and_refuses_a_contradicting_flag(tmp_path, monkeypatch):
    import diffmas.evaluation as evaluation
    from diffmas.cli import app

    seen = {}

    def fake_run_eval(cfg, **_):
        seen["cfg"] = cfg
        return {"method": cfg.method, "task": "t", "accuracy": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 0}

    monkeypatch.setattr(evaluation, "run_eval", fake_run_eval)
    adapter = _adapter(tmp_path)
    args = ["eval", "--task", ASSET, "--adapter", adapter, "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.method, cfg.latent_steps, cfg.realign, cfg.channel, cfg.roles) == (
        "latent_mas", 4, "norm", "latents", "comm"
    )  # fmt: skip
    bad = CliRunner().invoke(app, [*args, "--latent-steps", "10"])
    assert bad.exit_code == 2
    assert "latent_steps 4" in bad.output and "10" in bad.output


def test_a_roles_path_is_compared_as_the_cli_normalises_it(tmp_path):
    adapter = _adapter(tmp_path, config={"method": {"roles": "./chains/mine.yaml"}})
    assert (
        resolve_adapter_settings(adapter, {**_unset(), "roles": "chains/mine.yaml"})["roles"]
        == "chains/mine.yaml"
    )
