"""The contract every registered method keeps, checked for each entry of the registries (PEFT's `PeftCommonTester`
is the model): every inference method in `diffmas.methods.METHODS` and every training method in
`diffmas.training.specs.TRAIN_METHODS` gets these tests by being registered, so a new method that breaks one fails
here without anyone adding it to a list.

Inference methods: a batch answers as its questions one at a time (in both channels, and with per-agent views),
`trace_columns` bounds every trace the method builds (what `--batch-size auto` sizes the KV cache by), an answer
without grad allocates its trace once, the static answer cache answers alike, and a system built on the method
round-trips through `save_pretrained`/`from_pretrained`. Training methods: one that trains saves an adapter which
loads back as a `System` answering with the registered inference method exactly as the trainer's method did.

A method whose answers read other questions of its batch (the donor control: it has `donors`) is run alone with
each question's donor handed to it, which is what its row of the batch read."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import diffmas
from diffmas.configs import CHANNELS
from diffmas.methods import METHODS, Method, MethodConfig, get_method
from diffmas.testing import VIEW_QUESTIONS, VIEWS, assert_batch_equals_alone, tiny_backbone, view_chain
from diffmas.training.specs import TRAIN_METHODS

INFERENCE = sorted(METHODS)
TRAINING = sorted(TRAIN_METHODS)
QUESTIONS = ["What is 2 + 3?", "What is 10 times 4?", "Name a colour.", "yes?"]
FMT = "Answer with a number."
ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")


def _alone(method: Method, questions: Sequence[str], views: Sequence[Any] | None = None) -> list:
    """Each question run alone; a method that reads other questions of its batch gets the question its row of the
    batch read (`donors`), so alone it computes what that row computed."""
    donors = getattr(method, "donors", None)
    outs = []
    for i, q in enumerate(questions):
        kwargs: dict[str, Any] = {"views": [views[i]]} if views is not None else {}
        if donors is not None:
            j = donors(list(questions))[i]
            kwargs["donors"] = ([questions[j]], [views[j]] if views is not None else None)
        outs.append(method.run([q], FMT, **kwargs)[0])
    return outs


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("name", INFERENCE)
def test_a_batch_answers_as_one_at_a_time(backbone, name, channel):
    """At batch 4, greedy answers equal batch 1 and the Solver's log-probs agree within 1e-4 (fp32)."""
    config = MethodConfig(latent_steps=3, max_new_tokens=6, upstream_max_new_tokens=4, channel=channel)
    method = get_method(name, backbone, None, config)
    # single_latent's thinker feeds back 3 x 3 = 9 latent steps in a row: float rounding between batch shapes grows
    # along them (the tokens are equal; the log-probs stay within 5e-4, relative 1e-4)
    atol = 5e-4 if name == "single_latent" else 1e-4
    with torch.no_grad():
        assert_batch_equals_alone(method.run(QUESTIONS, FMT), _alone(method, QUESTIONS), atol=atol)


@pytest.mark.parametrize("name", INFERENCE)
def test_views_batch_answers_as_one_at_a_time(backbone, name):
    """Per-agent private views: each question's views travel with it in a batch."""
    config = MethodConfig(latent_steps=2, max_new_tokens=5, upstream_max_new_tokens=3)
    method = get_method(name, backbone, view_chain(), config)
    with torch.no_grad():
        batched = method.run(VIEW_QUESTIONS, FMT, views=VIEWS)
        assert_batch_equals_alone(batched, _alone(method, VIEW_QUESTIONS, VIEWS))


@pytest.mark.parametrize("name", INFERENCE)
def test_trace_columns_bound_every_trace_the_method_builds(qwen2, name):
    """`trace_columns` (the auto batch size's and the preallocation's measure) is an upper bound on each question's
    trace, and not a wild one (within the answer and text budgets)."""
    config = MethodConfig(latent_steps=3, max_new_tokens=6, upstream_max_new_tokens=5)
    method = get_method(name, qwen2, None, config)
    bound = method.trace_columns(QUESTIONS, FMT)
    with torch.no_grad():
        outs = method.run(QUESTIONS, FMT)  # each row's trace_len counts its real columns, pads excluded
    longest = max(o.trace_len + 1 for o in outs)  # the last answer token is never fed back
    assert longest <= bound
    assert bound - longest <= 6 + 3 * 9


@pytest.mark.parametrize("name", INFERENCE)
def test_an_answer_without_grad_allocates_its_trace_once(qwen2, name):
    """Without grad the trace is allocated once for prompts, latents and the answer budget (no doubling, no regrow
    when decoding starts), with the answers of a trace left to grow; under autograd nothing is preallocated."""
    from diffmas.trace import GrowingLayer

    config = MethodConfig(latent_steps=4, max_new_tokens=160, upstream_max_new_tokens=4)  # > a doubled prompt
    method = get_method(name, qwen2, None, config)
    with torch.no_grad():
        trace, _ = method.build_trace(QUESTIONS, FMT)
        answers = method.decode_solver(trace, QUESTIONS, FMT)
        assert method.capacity(QUESTIONS, FMT) == method.trace_columns(QUESTIONS, FMT)
    layers = [layer for layer in trace.cache.layers if isinstance(layer, GrowingLayer)]
    assert layers and all(layer.allocations == 1 for layer in layers), [layer.allocations for layer in layers]
    grown = get_method(name, qwen2, None, config)
    grown.capacity = lambda *a, **k: 0  # type: ignore[method-assign]  # the same method, its trace left to grow
    with torch.no_grad():
        trace2, _ = grown.build_trace(QUESTIONS, FMT)
        answers2 = grown.decode_solver(trace2, QUESTIONS, FMT)
    assert [a.token_ids for a in answers] == [a.token_ids for a in answers2]
    # what the capacity saves: never more allocations than a trace left to grow (a stitched trace is built whole)
    assert max(layer.allocations for layer in trace2.cache.layers) >= max(
        layer.allocations for layer in layers
    )
    assert method.capacity(QUESTIONS, FMT) == 0  # under autograd the cache concatenates


@pytest.mark.parametrize("name", INFERENCE)
def test_the_static_answer_cache_answers_alike(qwen2, name):
    """`static_cache` (text methods' upstream messages too) changes how answers are computed, not what."""
    config = dict(latent_steps=2, max_new_tokens=6, upstream_max_new_tokens=4)
    default = get_method(name, qwen2, None, MethodConfig(**config))
    static = get_method(name, qwen2, None, MethodConfig(**config, static_cache=True))
    with torch.no_grad():
        expected = default.run(QUESTIONS, FMT)
        batched = static.run(QUESTIONS, FMT)
        assert_batch_equals_alone(batched, expected)
        assert_batch_equals_alone(batched, _alone(static, QUESTIONS))
    assert [o.messages for o in batched] == [o.messages for o in expected]


def _perturbed_lora(arch: str):
    """A tiny backbone with one shared LoRA adapter whose weights are random (PEFT starts B at zero: an adapter
    that adds nothing would round-trip whether or not it was saved)."""
    from diffmas.adapters import add_lora
    from diffmas.configs import LoraSpec

    backbone, _ = add_lora(tiny_backbone(arch), LoraSpec(r=4), "shared", ["solver"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in backbone.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    backbone.model.eval()
    return backbone


@pytest.mark.parametrize("name", INFERENCE)
def test_a_system_on_the_method_round_trips_through_save_and_load(tmp_path, name):
    """`System.save_pretrained` then `from_pretrained` gives the same method, the same settings (latent ones off
    their defaults included) and the same greedy answers; the adapter is what makes them (the bare backbone
    answers otherwise)."""
    config = MethodConfig(
        latent_steps=3,
        realign="norm",
        max_new_tokens=5,
        upstream_max_new_tokens=3,
        channel="latents",
        top_k=3,
    )
    backbone = _perturbed_lora("llama")
    system = diffmas.System(backbone, get_method(name, backbone, None, config), {"base_model": "tiny-llama"})
    answers = system.generate(QUESTIONS[:2], FMT)
    saved = system.save_pretrained(tmp_path / "system")
    again = diffmas.System.from_pretrained(saved, backbone=tiny_backbone("llama"))
    assert again.method.name == name and again.config == system.config
    assert again.generate(QUESTIONS[:2], FMT) == answers
    bare = get_method(name, tiny_backbone("llama"), None, config)
    with torch.no_grad():
        bare_lp = [o.answer.logprobs for o in bare.run(QUESTIONS[:2], FMT)]
        again_lp = [o.answer.logprobs for o in again.method.run(QUESTIONS[:2], FMT)]
    assert bare_lp != again_lp


@pytest.mark.parametrize("name", TRAINING)
def test_a_trained_adapter_loads_back_as_its_inference_method(tmp_path, name):
    """Each training method trains a step, saves an adapter, and that adapter loads as a `System` that answers with
    the registered inference method (`TrainSpec.eval_method`) exactly as the trainer's own method does; a batch of
    the loaded system answers as one at a time."""
    from diffmas.training import DiffMASTrainer, TrainConfig

    spec = TRAIN_METHODS[name]
    assert spec.eval_method in METHODS
    cfg = TrainConfig.model_validate(
        {
            "data": {"task": ASSET, "split": "test", "eval_split": None},
            "method": {
                "method": name,
                "latent_steps": 2,
                "eval_max_new_tokens": 5,
                "upstream_max_new_tokens": 3,
            },
            "optim": {"steps": 2, "batch_size": 2, "lr": 2e-2, "warmup_steps": 0},
            "run": {
                "out": str(tmp_path / "run"),
                "report_to": [],
                "save_every": 100,
                "eval_at_end": False,
            },
        }
    )
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
    trainer.setup()
    adapter = Path(trainer.train()["adapter"])
    trainer.backbone.model.eval()
    if trainer.solver_only:  # as the trainer's own evaluation answers: the upstream agents stay untrained
        from diffmas.adapters import SolverOnly

        trainer.method.role_hook = SolverOnly(trainer.backbone.model, trainer.roles.solver.name)
    with torch.no_grad():
        live = trainer.method.run(QUESTIONS, FMT)
    system = diffmas.System.from_pretrained(adapter, backbone=tiny_backbone("llama"))
    assert system.method.name == spec.eval_method
    with torch.no_grad():
        loaded = system.method.run(QUESTIONS, FMT)
        assert_batch_equals_alone(loaded, _alone(system.method, QUESTIONS))
    assert_batch_equals_alone(loaded, live)
    saved = system.save_pretrained(tmp_path / "saved")
    shutil.rmtree(adapter)
    again = diffmas.System.from_pretrained(saved, backbone=tiny_backbone("llama"))
    assert again.config == system.config and again.method.name == spec.eval_method
    with torch.no_grad():
        assert_batch_equals_alone(again.method.run(QUESTIONS, FMT), loaded)
