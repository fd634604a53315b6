"""Thinking models: chat-template arguments reach the template, top-k sampling, answer stops
and grading after the `</think>` block, reference targets in a thinking turn's shape."""

from __future__ import annotations

import copy
import re

import torch

from diffmas.backbones import Backbone
from diffmas.methods import MethodConfig, get_method
from diffmas.tasks.base import ANSWER_STOPS, Item
from diffmas.testing import CHATML_TEMPLATE, tiny_backbone
from diffmas.thinking import answer_text, stop_after_thinking

# Qwen3's switch, as its template writes it: thinking off puts an empty think block into the generation prompt
QWEN3_LIKE = CHATML_TEMPLATE.replace(
    "{{ '<|im_start|>assistant\n' }}",
    "{{ '<|im_start|>assistant\n' }}{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\n\n</think>\n\n' }}{% endif %}",
)
CODE_STOP = ANSWER_STOPS["code"]


def _qwen3_like_backbone() -> Backbone:
    base = tiny_backbone("qwen2")
    tokenizer = copy.deepcopy(base.tokenizer)
    tokenizer.chat_template = QWEN3_LIKE
    return Backbone(base.model, tokenizer, base.name, base.source)


def test_chat_template_kwargs_reach_every_prompt():
    backbone = _qwen3_like_backbone()
    prompts = {}
    for thinking in (True, False):
        cfg = MethodConfig(latent_steps=1, chat_template_kwargs={"enable_thinking": thinking})
        method = get_method("latent_mas", backbone, config=cfg)
        ids = method.encode(method.roles.solver, ["what is 1 + 1?"], "fmt")[0]
        prompts[thinking] = backbone.tokenizer.decode(ids)
    assert prompts[False].endswith("<think>\n\n</think>\n\n")
    assert "<think>" not in prompts[True]


def test_the_code_stop_fires_after_the_think_block_only():
    stop = re.compile(stop_after_thinking(CODE_STOP))
    draft = "<think>\nfirst try:\n```python\ndef f(): pass\n```\nhmm"
    assert not stop.search(draft)
    assert stop.search(draft + "\n</think>\n\n```python\ndef f():\n    return 1\n```")
    assert stop.search("plain answer\n```python\nx = 1\n```")  # a model that does not think
    solver = MethodConfig(answer_stop=CODE_STOP).solver_decoding
    assert not re.search(solver.stop_pattern, draft)


def test_the_answer_is_what_follows_the_think_block():
    assert answer_text("<think>\n\\boxed{1}\n</think>\n\nso \\boxed{2}") == "so \\boxed{2}"
    assert answer_text("<think>\nstill \\boxed{1}") == ""  # ran out of budget while thinking: no answer
    assert answer_text("no tags \\boxed{3}") == "no tags \\boxed{3}"


def test_evaluation_grades_the_answer_after_the_think_block(tmp_path):
    from diffmas.decoding import Decoded
    from diffmas.evaluation import EvalConfig, _eval_batch
    from diffmas.methods.base import MethodOutput
    from diffmas.tasks import get_task

    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "1", "question": "1+1?", "answer": "2"}\n', encoding="utf-8")
    task = get_task(str(path))
    text = "<think>\nmaybe \\boxed{3}\n</think>\n\nThe answer is \\boxed{2}."

    class Fixed:
        def run(self, questions, fmt, generator=None, views=None):
            return [MethodOutput(text=text, answer=Decoded(text=text)) for _ in questions]

    cfg = EvalConfig(task=str(path), out=str(tmp_path / "out"))
    (row,) = _eval_batch(cfg, task, task.load("test"), Fixed(), None, None, None, "x")
    assert row["correct"] and row["extracted"] == "2" and row["output"] == text


def test_top_k_of_one_samples_the_greedy_tokens():
    backbone = tiny_backbone("llama")
    questions = ["what is 12 + 30?", "Natalia sold clips"]
    greedy = get_method("single", backbone, config=MethodConfig(max_new_tokens=6)).run(questions, "fmt")
    sampler = get_method("single", backbone, config=MethodConfig(max_new_tokens=6, temperature=1.5, top_k=1))
    sampled = sampler.run(questions, "fmt", torch.Generator().manual_seed(0))
    assert [o.answer.token_ids for o in sampled] == [o.answer.token_ids for o in greedy]


def test_reference_targets_take_a_thinking_turn_shape():
    from diffmas.training.objective import reference_target

    class Math:
        answer_type = "math"

    item = Item(id="1", question="q", answer="72", meta={"solution": "48 + 24 = 72\n#### 72"})
    thinking = reference_target(Math(), item, thinking=True)
    assert thinking == "<think>\n48 + 24 = 72\n</think>\n\nThe answer is \\boxed{72}."
    assert answer_text(thinking) == "The answer is \\boxed{72}."
    assert reference_target(Math(), item) == "48 + 24 = 72\nThe answer is \\boxed{72}."


def test_a_template_that_opens_the_block_stops_only_after_it_closes(monkeypatch):
    """R1 distills' template ends the generation prompt with `<think>`: the answer has `</think>` but no opener."""
    import diffmas.methods.base as base_module

    r1_like = _qwen3_like_backbone()
    r1_like.tokenizer.chat_template = CHATML_TEMPLATE.replace(
        "{{ '<|im_start|>assistant\n' }}", "{{ '<|im_start|>assistant\n<think>\n' }}"
    )
    seen = []
    monkeypatch.setattr(
        base_module, "decode", lambda trace, prompts, role, tok, config, *a: seen.append(config)
    )
    method = get_method("single", r1_like, config=MethodConfig(answer_stop=CODE_STOP))
    method.decode_solver(method.new_trace(1), ["q"], "fmt")
    stop = re.compile(seen[0].stop_pattern)
    assert not stop.search("draft:\n```python\nx = 1\n```\n")  # still inside the block the prompt opened
    assert stop.search("draft\n</think>\n\n```python\nx = 2\n```")
