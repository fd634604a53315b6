"""One base model in memory: a `compare` ladder trains and evaluates every rung's adapter on the backbone it
loaded once, which carries LoRA layers only while a rung uses them and comes back exactly as it was."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import pytest
import torch

from diffmas.compare import CompareConfig, CompareRecipe

ASSET = Path(__file__).parent / "assets" / "arith.jsonl"
INFERENCE = {"latent_steps": 2, "max_new_tokens": 4, "upstream_max_new_tokens": 3, "batch_size": 2}
TRAINING = {"optim": {"steps": 2, "batch_size": 2, "lr": 5e-2}, "method": {"eval_max_new_tokens": 3}}


def _recipe(tiny_llama_dir: Path, run: Path, methods: list[str]) -> CompareRecipe:
    cfg = CompareConfig.model_validate(
        {
            "model": str(tiny_llama_dir),
            "task": str(ASSET),
            "test_split": "test",
            "train_split": "test",
            "n_test": 3,
            "methods": methods,
            "inference": INFERENCE,
            "training": TRAINING,
        }
    )
    recipe = CompareRecipe(cfg, run)
    recipe.setup()
    return recipe


def _snapshot(model) -> dict:
    """Everything a rung could leave behind on the base model."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "types": {n: type(m) for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "grads": {n for n, p in model.named_parameters() if p.grad is not None},
        "hooks": {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()},
        "attributes": {n: set(vars(m)) for n, m in model.named_modules()},
    }


def _assert_same(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    changed = [k for k in before["state"] if not torch.equal(before["state"][k], after["state"][k])]
    assert not changed, f"base weights changed: {changed[:3]}"
    for key in ("types", "requires_grad", "training", "grads", "hooks", "attributes"):
        assert before[key] == after[key], key


def _outputs(run_eval_dir: Path) -> list[tuple[str, list[float]]]:
    rows = [json.loads(line) for line in (run_eval_dir / "samples.jsonl").read_text().splitlines()]
    return [(r["output"], r["logprobs"]) for r in rows]


@pytest.mark.parametrize("rung", ["diffmas_per_role", "single_sft", "diffmas_learned"])
def test_a_trained_rung_leaves_the_shared_base_model_as_it_was(tiny_llama_dir, tmp_path, rung):
    recipe = _recipe(tiny_llama_dir, tmp_path / "run", [rung, "latent_mas"])
    model = recipe.backbone.model
    before = _snapshot(model)
    trained = recipe.evaluate(rung, tmp_path / "run" / "eval" / rung)
    assert trained["n"] == 3 and trained["training_curve"]["step"] == [1, 2]
    _assert_same(before, _snapshot(model))
    assert recipe.backbone.model is model

    recipe.evaluate("latent_mas", tmp_path / "run" / "eval" / "latent_mas")
    fresh = _recipe(tiny_llama_dir, tmp_path / "fresh", ["latent_mas"])
    fresh.evaluate("latent_mas", tmp_path / "fresh" / "eval" / "latent_mas")
    assert _outputs(tmp_path / "run" / "eval" / "latent_mas") == _outputs(
        tmp_path / "fresh" / "eval" / "latent_mas"
    )


def test_the_adapter_evaluation_computes_with_the_base_models_own_weights(tiny_llama_dir, tmp_path):
    recipe = _recipe(tiny_llama_dir, tmp_path / "run", ["diffmas"])
    adapter, _ = recipe.train("diffmas")
    model = recipe.backbone.model
    q_proj = model.model.layers[0].self_attn.q_proj
    seen: list[tuple[int, str]] = []

    def record(module, args):  # which weight computed, and what sat in q_proj's place in the shared model
        seen.append((module.weight.data_ptr(), type(model.model.layers[0].self_attn.q_proj).__module__))

    handle = q_proj.register_forward_pre_hook(record)
    try:
        recipe.evaluate("diffmas", tmp_path / "run" / "eval" / "diffmas")
    finally:
        handle.remove()
    assert seen, "the evaluation never ran the base model's layer"
    assert {ptr for ptr, _ in seen} == {q_proj.weight.data_ptr()}
    assert {where for _, where in seen} == {
        "peft.tuners.lora.layer"
    }  # the adapter was on, around these weights
    assert type(model.model.layers[0].self_attn.q_proj) is type(q_proj)  # and off again

    from diffmas.adapters import adapter_attached

    base_ptrs = {p.data_ptr() for p in model.parameters()}
    with adapter_attached(recipe.backbone, adapter) as (attached, _, _):
        frozen = {p.data_ptr() for n, p in attached.model.named_parameters() if "lora_" not in n}
        assert frozen == base_ptrs


def _resident_base_bytes() -> int:
    """Bytes of the distinct parameter storages held by live modules, LoRA weights and realigners left out."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from diffmas.realign import Realigner

    gc.collect()
    with warnings.catch_warnings():  # isinstance on every live object touches deprecated torch aliases
        warnings.simplefilter("ignore", FutureWarning)
        modules = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module)]
    extra = set()
    for m in modules:
        if isinstance(m, BaseTunerLayer | Realigner):
            extra |= {
                p.data_ptr() for n, p in m.named_parameters() if isinstance(m, Realigner) or "lora_" in n
            }
    storages = {}
    for m in modules:
        for p in m.parameters(recurse=False):
            if p.data_ptr() not in extra:
                storages[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    return sum(storages.values())


def test_a_compare_run_never_holds_two_copies_of_the_weights(tiny_llama_dir, tmp_path, monkeypatch):
    import diffmas.evaluation
    import diffmas.training.trainer

    baseline = _resident_base_bytes()
    recipe = _recipe(tiny_llama_dir, tmp_path / "run", ["single", "diffmas", "single_sft"])
    weights = sum(
        p.untyped_storage().nbytes()
        for p in {p.untyped_storage().data_ptr(): p for p in recipe.backbone.model.parameters()}.values()
    )
    seen: dict[str, list[int]] = {"train": [], "eval": []}

    def observed(where, fn):
        def wrapper(*args, **kwargs):
            seen[where].append(_resident_base_bytes() - baseline)
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        diffmas.training.trainer, "batch_loss", observed("train", diffmas.training.trainer.batch_loss)
    )
    monkeypatch.setattr(diffmas.evaluation, "_eval_batch", observed("eval", diffmas.evaluation._eval_batch))
    results = recipe.run()
    assert list(results["methods"]) == ["single", "diffmas", "single_sft"]
    assert len(seen["train"]) >= 4 and len(seen["eval"]) >= 6
    assert max(seen["train"] + seen["eval"]) == weights, (weights, seen)
