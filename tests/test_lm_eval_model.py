"""lm-evaluation-harness runs a DiffMAS system offline, on tasks written as YAML over a local JSONL: the Solver's
log-likelihoods are those of the model itself where there is no upstream agent, batching changes nothing, and the
harness's generations are the system's own answers cut at the task's stop strings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import diffmas
from diffmas.lm_eval_model import DiffMASLM, cut_at
from diffmas.methods import MethodConfig, get_method
from diffmas.roles import RoleChain
from diffmas.testing import tiny_backbone

QUESTIONS = ["What is 12 + 30?", "Which gas do plants take in?", "yes or no?"]
ROWS = [
    {"question": "What is 2 + 2?", "choices": [" 3", " 4", " five"], "label": 1, "answer": "4"},
    {"question": "Which gas do plants take in?", "choices": [" oxygen", " carbon dioxide"], "label": 1,
     "answer": "carbon dioxide"},
    {"question": "Is ice a solid?", "choices": [" yes", " no"], "label": 0, "answer": "yes"},
]  # fmt: skip


def _system(method: str = "latent_mas", backbone=None) -> diffmas.System:
    backbone = backbone or tiny_backbone("llama")
    config = MethodConfig(latent_steps=2, max_new_tokens=6)
    return diffmas.System(backbone, get_method(method, backbone, RoleChain.load(None), config), {})


def test_without_upstream_agents_the_loglikelihood_is_the_models_own():
    """`single` has no upstream agent: the trace holds the Solver's prompt alone, so the score of a continuation
    must be what the plain model gives those tokens after the same prompt."""
    lm = DiffMASLM(system=_system("single"), batch_size=2)
    method, tokenizer, model = lm.system.method, lm.system.backbone.tokenizer, lm.system.backbone.model
    pairs = [("What is 2 + 2?", " 4"), ("Is ice a solid?", " no, it is not")]
    got = lm.loglikelihood_pairs(pairs)
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        prompt = method.encode(method.roles.solver, [context], "")[0]
        target = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([list(prompt) + target])).logits[0].float()
        steps = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
        expected = steps.gather(1, torch.tensor(target)[:, None]).sum().item()
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert greedy == bool((steps.argmax(-1) == torch.tensor(target)).all())


def test_the_latent_chain_changes_the_scores_and_batching_does_not():
    pairs = [(q, c) for q in QUESTIONS for c in (" 42", " carbon dioxide")]
    latent = DiffMASLM(system=_system("latent_mas"), batch_size=4).loglikelihood_pairs(pairs)
    one_by_one = DiffMASLM(system=_system("latent_mas"), batch_size=1).loglikelihood_pairs(pairs)
    alone = DiffMASLM(system=_system("no_comm"), batch_size=4).loglikelihood_pairs(pairs)
    assert [lp for lp, _ in latent] == pytest.approx([lp for lp, _ in one_by_one], abs=1e-4)
    assert [g for _, g in latent] == [g for _, g in one_by_one]
    assert max(abs(a[0] - b[0]) for a, b in zip(latent, alone)) > 1e-3  # the upstream trace is read


def test_text_methods_refuse_loglikelihood_by_name():
    with pytest.raises(NotImplementedError, match="text_mas"):
        DiffMASLM(system=_system("text_mas")).loglikelihood_pairs([("q", " a")])


def test_cut_at_takes_the_text_before_the_first_stop():
    assert cut_at("42\n\nQuestion: next", ["\n\n", "Question:"]) == "42"
    assert cut_at("no stop here", []) == "no stop here"


def _task_dir(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (tmp_path / "tiny_mcq.yaml").write_text(
        "task: diffmas_tiny_mcq\n" + common + "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    (tmp_path / "tiny_gen.yaml").write_text(
        "task: diffmas_tiny_gen\n" + common + "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 5\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    return tmp_path


def test_lm_eval_runs_a_system_on_local_tasks(tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    system = _system("latent_mas")
    lm = DiffMASLM(system=system, batch_size=2)
    results = simple_evaluate(
        model=lm,
        tasks=["diffmas_tiny_mcq", "diffmas_tiny_gen"],
        task_manager=TaskManager(include_path=str(_task_dir(tmp_path))),
        log_samples=True,
        bootstrap_iters=0,
    )
    assert results is not None
    mcq, gen = results["results"]["diffmas_tiny_mcq"], results["results"]["diffmas_tiny_gen"]
    samples = results["samples"]["diffmas_tiny_mcq"]
    scores = lm.loglikelihood_pairs([(r["question"], c) for r in ROWS for c in r["choices"]])
    picked, at = [], 0
    for row in ROWS:
        row_scores = [lp for lp, _ in scores[at : at + len(row["choices"])]]
        picked.append(row_scores.index(max(row_scores)) == row["label"])
        at += len(row["choices"])
    assert len(samples) == len(ROWS) and mcq["acc,none"] == pytest.approx(sum(picked) / len(ROWS))
    answers = system.generate([r["question"] for r in ROWS], "", max_new_tokens=5)
    by_doc = {s["doc_id"]: s["resps"][0][0] for s in results["samples"]["diffmas_tiny_gen"]}
    assert [by_doc[i] for i in range(len(ROWS))] == [cut_at(a, ["\n"]) for a in answers]
    assert gen["exact_match,none"] == pytest.approx(
        sum(cut_at(a, ["\n"]) == r["answer"] for a, r in zip(answers, ROWS)) / len(ROWS)
    )


def test_the_model_is_registered_and_loads_an_adapter_from_its_arguments(
    tmp_path, tiny_llama_dir, monkeypatch
):
    from lm_eval.api.registry import get_model

    from diffmas.backbones import load_backbone

    assert get_model("diffmas") is DiffMASLM
    backbone = load_backbone(tiny_llama_dir)
    system = _system("latent_mas", backbone)
    system.backbone, system.method = _with_adapter(system, backbone)
    saved = system.save_pretrained(tmp_path / "adapter")
    lm = DiffMASLM.create_from_arg_string(
        f"adapter={saved},model={tiny_llama_dir},batch_size=2", {"device": None, "max_batch_size": None}
    )
    assert lm.batch_size == 2 and lm.system.method.name == "latent_mas"
    assert lm.system.generate(QUESTIONS) == system.generate(QUESTIONS)

    # the documented command line: lm-eval's own flags, `--model diffmas` implied
    from diffmas.lm_eval_model import main

    tasks, out = _task_dir(tmp_path / "tasks"), tmp_path / "out"
    argv = ["--model_args", f"adapter={saved},model={tiny_llama_dir}", "--tasks", "diffmas_tiny_gen"]
    argv += ["--include_path", str(tasks), "--batch_size", "2", "--log_samples", "--output_path", str(out)]
    monkeypatch.setattr(sys, "argv", ["lm_eval"])
    main(argv)
    (samples,) = out.rglob("samples_diffmas_tiny_gen_*.jsonl")
    rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
    answers = system.generate([r["question"] for r in ROWS], "", max_new_tokens=5)
    assert [r["resps"][0][0] for r in rows] == [cut_at(a, ["\n"]) for a in answers]


def _with_adapter(system: diffmas.System, backbone):
    """A LoRA adapter on the system's backbone with non-zero weights (so it changes answers when loaded)."""
    from diffmas.adapters import add_lora
    from diffmas.configs import LoraSpec

    wrapped, _ = add_lora(backbone, LoraSpec(), "shared", [r.name for r in system.roles.roles])
    torch.manual_seed(1)
    for name, p in wrapped.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    wrapped.model.eval()  # LoRA's dropout layers are built in training mode
    method = get_method(system.method.name, wrapped, system.roles, system.config)
    return wrapped, method


def test_without_an_adapter_the_arguments_build_an_untrained_chain(tiny_llama_dir):
    from diffmas.backbones import load_backbone

    lm = DiffMASLM.create_from_arg_string(f"model={tiny_llama_dir},method=latent_mas,latent_steps=2", {})
    assert lm.system.method.name == "latent_mas" and lm.system.config.latent_steps == 2
    expected = _system("latent_mas", load_backbone(tiny_llama_dir)).generate(QUESTIONS, max_new_tokens=4)
    assert lm.system.generate(QUESTIONS, max_new_tokens=4) == expected


# ---------------------------------------------------------------------------- lm-eval and diffmas eval, item by item
def _compare_script():
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "lm_eval_compare.py"
    spec = importlib.util.spec_from_file_location("lm_eval_compare", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRADED = [  # (answer type, JSONL row, response, what the filter gives)
    ("math", {"id": "m1", "question": "12 + 30?", "answer": "42"}, "So \\boxed{42}.", "42"),
    (
        "math",
        {"id": "m2", "question": "1/2?", "answer": "0.5"},
        "It is \\boxed{\\frac{1}{2}}",
        "0.5",
    ),  # math-verify
    ("math", {"id": "m3", "question": "12 + 30?", "answer": "42"}, "the answer is 41", "41"),
    ("math", {"id": "m4", "question": "12 + 30?", "answer": "42"}, "no idea", ""),
    ("math", {"id": "m5", "question": "12 + 30?", "answer": "42"}, "<think>\\boxed{42}</think> 7", "7"),
    ("mcq", {"id": "c1", "question": "Pick", "answer": "B", "choices": ["red", "blue"]}, "\\boxed{B}", "B"),
    ("mcq", {"id": "c2", "question": "Pick", "answer": "B", "choices": ["red", "blue"]}, "It is red.", "A"),
    ("yesno", {"id": "y1", "question": "Ice solid?", "answer": "yes"}, "\\boxed{yes}", "yes"),
]


@pytest.mark.parametrize(("answer_type", "row", "response", "expected"), GRADED)
def test_the_grade_filter_is_the_diffmas_grader(tmp_path, answer_type, row, response, expected):
    """`diffmas_grade` turns a response into the gold answer exactly when `diffmas eval`'s grader (the JSONL task's
    `grade` on the text after any think block) accepts it, else into the answer it extracted."""
    from lm_eval.api.registry import get_filter

    from diffmas.lm_eval_model import GradeFilter
    from diffmas.tasks.jsonl import JsonlTask
    from diffmas.thinking import answer_text

    assert get_filter("diffmas_grade") is GradeFilter
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(row) + "\n")
    task = JsonlTask(data, answer_type=answer_type)
    verdict = task.grade(answer_text(response), task.load()[0])
    (got,) = GradeFilter(answer_type=answer_type).apply([[response]], [row])
    assert got == [expected]
    assert (got[0] == row["answer"]) == verdict.correct
    assert GradeFilter().apply([[response]], [{**row, "answer_type": answer_type}]) == [[expected]]


def test_the_grade_filter_and_the_model_refuse_what_they_cannot_grade():
    from diffmas.lm_eval_model import GradeFilter

    with pytest.raises(ValueError, match="gym answers need"):
        GradeFilter(answer_type="gym")
    with pytest.raises(ValueError, match="answer_type 'essay'"):
        GradeFilter(answer_type="essay")
    with pytest.raises(ValueError, match="format_instruction or answer_type, not both"):
        DiffMASLM(system=_system("single"), format_instruction="x", answer_type="math")
    lm = DiffMASLM(system=_system("single"), answer_type="integer")
    assert "integer" in lm.format_instruction and "\\boxed{}" in lm.format_instruction


def test_lm_eval_and_diffmas_eval_agree_item_by_item(tmp_path, tiny_llama_dir):
    """The task of docs/lm_eval.md's comparison (scripts/lm_eval_compare.py) on the tiny model: `diffmas eval` on a
    JSONL and lm-eval on a YAML over the same JSONL give every item the same answer text and the same verdict."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from diffmas.evaluation import EvalConfig, run_eval

    script = _compare_script()
    data = tmp_path / "arith.jsonl"
    data.write_text((Path(__file__).parent / "assets" / "arith.jsonl").read_text())
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / f"{script.TASK}.yaml").write_text(script.task_yaml(data, 6, "math"))
    cfg = EvalConfig(
        model=str(tiny_llama_dir), task=str(data), method="latent_mas", latent_steps=2, max_new_tokens=6,
        batch_size=2, out=str(tmp_path / "eval"),
    )  # fmt: skip
    summary = run_eval(cfg)
    lm = DiffMASLM.create_from_arg_string(
        f"model={tiny_llama_dir},method=latent_mas,latent_steps=2,answer_type=math,batch_size=2", {}
    )
    results = simple_evaluate(
        model=lm, tasks=[script.TASK], task_manager=TaskManager(include_path=str(tasks)), log_samples=True,
        bootstrap_iters=0,
    )  # fmt: skip
    assert results is not None
    ours = script.read_jsonl(tmp_path / "eval" / "samples.jsonl")
    result = script.compare(ours, results["samples"][script.TASK])
    assert result["n"] == 5 and all(i["same_text"] for i in result["items"]), result
    assert all(i["diffmas_correct"] == i["lm_eval_correct"] for i in result["items"]), result
    assert result["items_agree"]
    assert results["results"][script.TASK]["exact_match,diffmas"] == pytest.approx(summary["accuracy"])
    assert {r["output"] for r in ours} != {""}  # the answers compared are real text
