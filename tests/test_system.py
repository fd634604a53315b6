"""`diffmas.System`: a trained system loads from its adapter directory alone and round-trips through
`save_pretrained` with identical greedy answers, with no flag repeating how it was trained."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import diffmas
from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

ASSET = str(Path(__file__).parent / "assets" / "arith.jsonl")
QUESTIONS = ["What is 12 + 30?", "What is 7 + 5?", "yes or no?"]
ROLES = """strip: false
roles:
  - name: planner
    template: "Plan:\\n{question}\\n"
  - name: solver
    template: "\\nSolve. {format}\\n{context}\\nQuestion: {question}"
"""


def _train(tmp_path: Path, roles: Path, lora: dict | None = None, **method) -> Path:
    cfg = TrainConfig.model_validate(
        {
            "lora": lora or {},
            "data": {"task": ASSET, "split": "test", "eval_split": None},
            "method": {"latent_steps": 2, "eval_max_new_tokens": 5, "roles": str(roles), **method},
            "optim": {"steps": 3, "batch_size": 2, "lr": 2e-2, "warmup_steps": 0},
            "run": {
                "out": str(tmp_path / "run"),
                "tensorboard": False,
                "save_every": 100,
                "eval_at_end": False,
            },
        }
    )
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
    trainer.setup()
    return Path(trainer.train()["adapter"])


@pytest.fixture
def roles_file(tmp_path) -> Path:
    path = tmp_path / "roles.yaml"
    path.write_text(ROLES)
    return path


@pytest.mark.parametrize(
    "method",
    [
        {"method": "diffmas", "realign": "learned"},
        {"method": "diffmas", "lora": {"adapters": "per_role"}, "channel": "latents"},
        {"method": "single_sft"},
    ],
)
def test_save_load_round_trip_gives_identical_greedy_answers(tmp_path, roles_file, method):
    adapter = _train(tmp_path, roles_file, **method)
    system = diffmas.System.from_pretrained(adapter, backbone=tiny_backbone("llama"))
    assert system.config.max_new_tokens == 5  # the trainer's evaluation budget is the default
    assert [r.name for r in system.roles.roles] == ["planner", "solver"]
    answers = system.generate(QUESTIONS, "Box it.")
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)

    saved = system.save_pretrained(tmp_path / "saved")
    roles_file.unlink()  # the templates are embedded: the roles file is no longer needed
    shutil.rmtree(adapter)
    again = diffmas.System.from_pretrained(saved, backbone=tiny_backbone("llama"))
    assert again.generate(QUESTIONS, "Box it.") == answers
    assert again.method.name == system.method.name and again.config == system.config
    assert again.roles.to_mapping() == system.roles.to_mapping()
    assert again.roles.solver.render("q") == "\nSolve. \nQuestion: q"  # rendered as written (strip: false)


def test_the_adapter_changes_the_answers(tmp_path, roles_file):
    """The round trip above could pass with adapters that load as nothing: the trained system must answer
    differently from the same method on the bare backbone."""
    from diffmas.methods import get_method

    adapter = _train(tmp_path, roles_file, method="single_sft")
    system = diffmas.System.from_pretrained(adapter, backbone=tiny_backbone("llama"))
    bare = get_method(system.method.name, tiny_backbone("llama"), system.roles, system.config)
    with torch.no_grad():
        plain = [o.text for o in bare.run(QUESTIONS, "Box it.")]
    assert system.generate(QUESTIONS, "Box it.") != plain


def test_settings_the_adapter_was_not_trained_with_are_refused(tmp_path, roles_file):
    adapter = _train(tmp_path, roles_file, method="diffmas")
    with pytest.raises(ValueError, match="latent_steps"):
        diffmas.System.from_pretrained(adapter, backbone=tiny_backbone("llama"), latent_steps=7)
    system = diffmas.System.from_pretrained(adapter, backbone=tiny_backbone("llama"), max_new_tokens=2)
    assert system.config.max_new_tokens == 2 and system.config.latent_steps == 2


def test_save_refuses_a_directory_that_is_not_empty(tmp_path, roles_file):
    system = diffmas.System.from_pretrained(_train(tmp_path, roles_file), backbone=tiny_backbone("llama"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        system.save_pretrained(tmp_path / "full")


def test_public_names_are_importable_from_the_package():
    import subprocess
    import sys

    code = "import diffmas, sys; assert 'torch' not in sys.modules; print(diffmas.__version__)"
    assert subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    for name in diffmas.__all__:
        assert getattr(diffmas, name) is not None, name
    assert diffmas.System.__module__ == "diffmas.system"
