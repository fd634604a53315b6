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


def _train(tmp_path: Path, roles: Path, lora: dict | None = None, backbone=None, **method) -> Path:
    cfg = TrainConfig.model_validate(
        {
            "lora": lora or {},
            "data": {"task": ASSET, "split": "test", "eval_split": None},
            "method": {"latent_steps": 2, "eval_max_new_tokens": 5, "roles": str(roles), **method},
            "optim": {"steps": 3, "batch_size": 2, "lr": 2e-2, "warmup_steps": 0},
            "run": {
                "out": str(tmp_path / "run"),
                "report_to": [],
                "save_every": 100,
                "eval_at_end": False,
            },
        }
    )
    trainer = DiffMASTrainer(cfg, backbone=backbone or tiny_backbone("llama"))
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
        {"train_method": "diffmas", "realign": "learned"},
        {"train_method": "diffmas", "lora": {"adapters": "per_role"}, "channel": "latents"},
        {"train_method": "single_sft"},
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


def test_save_into_an_existing_folder_replaces_the_earlier_save_and_keeps_other_files(tmp_path, roles_file):
    """As transformers' save_pretrained: an existing folder is written into; what an earlier save put there (here
    per-role adapters) does not linger beside the new one, and a file of the user's stays."""
    per_role = diffmas.System.from_pretrained(
        _train(tmp_path / "a", roles_file, lora={"adapters": "per_role"}), backbone=tiny_backbone("llama")
    )
    shared = diffmas.System.from_pretrained(
        _train(tmp_path / "b", roles_file, method="single_sft"), backbone=tiny_backbone("llama")
    )
    target = tmp_path / "system"
    per_role.save_pretrained(target)
    assert (target / "planner" / "adapter_config.json").is_file()
    (target / "README.md").write_text("mine")
    shared.save_pretrained(target)
    assert not (target / "planner").exists() and not (target / "solver").exists()
    assert (target / "README.md").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".system.")]  # no staging folder left
    again = diffmas.System.from_pretrained(target, backbone=tiny_backbone("llama"))
    assert again.method.name == shared.method.name
    assert again.generate(QUESTIONS, "Box it.") == shared.generate(QUESTIONS, "Box it.")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        shared.save_pretrained(tmp_path / "file")


def test_generate_takes_transformers_generation_arguments(tmp_path, roles_file):
    from transformers import GenerationConfig

    adapter = _train(tmp_path, roles_file, method="diffmas")
    system = diffmas.System.from_pretrained(adapter, backbone=tiny_backbone("llama"))
    short = diffmas.System.from_pretrained(adapter, backbone=tiny_backbone("llama"), max_new_tokens=2)
    expected = short.generate(QUESTIONS, "Box it.")
    assert system.generate(QUESTIONS, "Box it.", max_new_tokens=2) == expected
    assert (
        system.generate(QUESTIONS, "Box it.", generation_config=GenerationConfig(max_new_tokens=2))
        == expected
    )
    assert system.generate(QUESTIONS[0], "Box it.", max_new_tokens=2) == expected[0]  # one string in, one out
    assert system.config.max_new_tokens == 5  # the call's arguments do not stay

    hot = diffmas.System.from_pretrained(adapter, backbone=tiny_backbone("llama"), temperature=1.0)
    sampled = system.generate(
        QUESTIONS, "Box it.", do_sample=True, generator=torch.Generator().manual_seed(3)
    )
    assert sampled == hot.generate(QUESTIONS, "Box it.", generator=torch.Generator().manual_seed(3))
    assert hot.generate(QUESTIONS, "Box it.", do_sample=False) == system.generate(QUESTIONS, "Box it.")
    with pytest.raises(TypeError, match="max_new_tokens"):
        system.generate(QUESTIONS, max_length=3)


def _fake_hub(cache: Path):
    """A stand-in for the hub's two upload calls: the folder lands in `cache` in the hub cache's layout (refs/main
    naming a snapshot), which is what huggingface_hub's own snapshot_download reads with the hub off."""
    import hashlib

    def create_repo(self, repo_id, **kw):
        return f"https://hub.invalid/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kw):
        files = sorted(p for p in Path(folder_path).rglob("*") if p.is_file())
        sha = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder_path, repo / "snapshots" / sha)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(sha)
        return sha

    return create_repo, upload_folder


def test_push_to_hub_and_load_by_repo_id(tmp_path, roles_file, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    cache = tmp_path / "hub-cache"
    create_repo, upload_folder = _fake_hub(cache)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    system = diffmas.System.from_pretrained(
        _train(tmp_path, roles_file, method="diffmas", realign="learned"), backbone=tiny_backbone("llama")
    )
    sha = system.push_to_hub("someone/tiny-system")
    snapshot = cache / "models--someone--tiny-system" / "snapshots" / sha
    assert "library_name: peft" in (snapshot / "README.md").read_text()
    loaded = diffmas.System.from_pretrained("someone/tiny-system", backbone=tiny_backbone("llama"))
    assert loaded.generate(QUESTIONS, "Box it.") == system.generate(QUESTIONS, "Box it.")
    assert loaded.config == system.config and loaded.method.name == system.method.name
    with pytest.raises(FileNotFoundError, match="someone/no-such-system") as e:
        diffmas.System.from_pretrained("someone/no-such-system", backbone=tiny_backbone("llama"))
    assert "\n" not in str(e.value)


def test_the_base_model_is_recorded_as_a_hub_id_with_its_commit_not_a_cache_path(
    tmp_path, roles_file, tiny_llama_dir
):
    """A model read from the hub cache is saved as `org/name` at its commit (PEFT's adapter_config.json too); one
    from another local folder as its path with a hash of its weights."""
    import json

    from diffmas.backbones import load_backbone

    sha = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / sha
    shutil.copytree(tiny_llama_dir, snapshot)
    adapter = _train(tmp_path / "hub-run", roles_file, backbone=load_backbone(snapshot), method="single_sft")
    manifest = json.loads((adapter / "diffmas_adapter.json").read_text())
    peft_config = json.loads((adapter / "adapter_config.json").read_text())
    assert manifest["base_model"] == "tiny-org/tiny-llama" and manifest["base_model_revision"] == sha
    assert peft_config["base_model_name_or_path"] == "tiny-org/tiny-llama"

    local = _train(
        tmp_path / "local-run", roles_file, backbone=load_backbone(tiny_llama_dir), method="single_sft"
    )
    manifest = json.loads((local / "diffmas_adapter.json").read_text())
    assert manifest["base_model"] == str(Path(tiny_llama_dir).resolve())
    assert len(manifest["base_model_sha256"]) == 64
    system = diffmas.System.from_pretrained(local)  # loads its base model from the recorded name
    assert (
        system.save_pretrained(tmp_path / "again")
        and json.loads((tmp_path / "again" / "diffmas_adapter.json").read_text())["base_model_sha256"]
        == manifest["base_model_sha256"]
    )


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
