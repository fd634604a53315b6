"""The communication tasks: seeded, split across agents, closed-set, graded exactly, and really split.

No model here: reference solvers read the views (all of them, or one) and check what each can answer.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from diffmas.grading import grade
from diffmas.tasks import get_task, registered_tasks
from diffmas.tasks.comm import TRAITS, item_signature

TASKS = ("secret", "relay", "split_hop", "tipsheet")
SMALL = {"n_train": 300, "n_test": 200}


def small(name: str, **kw):
    return get_task(name, **{**SMALL, **kw})


@pytest.mark.parametrize("name", TASKS)
def test_registered_and_described(name):
    assert name in registered_tasks()
    task = get_task(name)
    assert task.answer_type == "text"
    assert task.source == "procedural (diffmas.tasks.comm)"
    assert task.sizes == {"train": 5000, "test": 500}
    assert task.splits() == ("train", "test")
    assert "\\boxed{}" in task.format_instruction
    assert task.__doc__ and "chance" in task.__doc__.lower()


def test_tasks_command_lists_them():
    from diffmas.cli.tasks_cmd import task_rows

    rows = {r[0]: r for r in task_rows()}
    for name in TASKS:
        assert rows[name][1:] == ("procedural (diffmas.tasks.comm)", "train 5000, test 500", "text")


@pytest.mark.parametrize("name", TASKS)
def test_deterministic_by_seed(name):
    a = small(name, seed=1).load("test")
    b = small(name, seed=1).load("test")
    assert [it.to_dict() for it in a] == [it.to_dict() for it in b]
    c = small(name, seed=2).load("test")
    assert [item_signature(it) for it in a] != [item_signature(it) for it in c]
    assert a[17].id == f"{name}-test-17"


def test_deterministic_across_processes():
    """String seeds (not hash()) make the items the same in a fresh interpreter with another hash seed."""
    import os
    import subprocess
    import sys

    code = "from diffmas.tasks import get_task; print(get_task('relay', n_train=5, n_test=3).load('test')[2].views)"
    out = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(out) == 1
    assert out.pop().strip() == str(get_task("relay", n_train=5, n_test=3).load("test")[2].views)


@pytest.mark.parametrize("name", TASKS)
def test_train_and_test_are_disjoint(name):
    task = small(name)
    train = {item_signature(it) for it in task.load("train")}
    test = [item_signature(it) for it in task.load("test")]
    assert len(set(test)) == len(test)
    assert not train & set(test)
    assert len(task.load("train")) == 300 and len(test) == 200


def test_test_avoids_train_in_a_small_item_space():
    """2 options of 90 numbers: ~16k items, so many draws collide with train and are redrawn."""
    task = get_task("secret", kind="number", options=2, n_train=3000, n_test=300)
    train = {item_signature(it) for it in task.load("train")}
    assert not train & {item_signature(it) for it in task.load("test")}


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("agents", [2, 3, 4, 6])
def test_one_view_per_agent_solver_last_and_empty(name, agents):
    task = small(name, agents=agents, n_train=20, n_test=20)
    for it in task.load("test"):
        assert isinstance(it.views, tuple) and len(it.views) == agents
        assert it.views[-1] == ""
        assert it.views[0]
        assert it.full_view


@pytest.mark.parametrize("name", TASKS)
def test_closed_answer_set(name):
    task = small(name)
    items = task.load("test")
    for it in items:
        opts = it.meta["options"]
        assert it.answer in opts and len(set(opts)) == len(opts)
        assert it.meta["targets"] == [it.answer]
        listed = it.question.split("Options: ")[1].rstrip(".").split(", ")
        assert listed == opts
        assert len(it.question.split()) <= 30
        assert all(len(v.split()) <= 30 for v in it.views)
    chance = sum(1 / len(it.meta["options"]) for it in items) / len(items)
    assert task.chance_rate(items) == pytest.approx(chance)


@pytest.mark.parametrize("name", TASKS)
def test_majority_class_and_answer_position_near_chance(name):
    task = get_task(name, n_train=50, n_test=500)
    items = task.load("test")
    chance = task.chance_rate(items)
    top = Counter(it.answer for it in items).most_common(1)[0][1] / len(items)
    assert top < 2 * chance
    positions = Counter(it.meta["options"].index(it.answer) for it in items)
    assert len(positions) == len(items[0].meta["options"])  # every position is used
    assert max(positions.values()) / len(items) < 1.6 * chance


@pytest.mark.parametrize("name", TASKS)
def test_grading_is_exact(name):
    task = small(name)
    for it in task.load("test")[:20]:
        wrong = next(o for o in it.meta["options"] if o != it.answer)
        assert grade(task, f"Reasoning... \\boxed{{{it.answer}}}", it).correct
        assert task.grade(f"\\boxed{{{it.answer.lower()}}}", it).correct  # normalised (case)
        g = grade(task, f"\\boxed{{{wrong}}}", it)
        assert not g.correct and g.reason == "wrong"
        assert grade(task, f"The answer is {it.answer}.", it).correct  # the "answer is" phrase
        assert not grade(task, f"The answer is {wrong}.", it).correct
        assert not grade(task, f"\\boxed{{{it.answer} or {wrong}}}", it).correct


def test_grading_of_bare_text_and_numbers():
    words = small("secret")
    it = words.load("test")[0]
    # No box and no "answer is" phrase: the text grader finds no answer in a bare word.
    assert grade(words, it.answer, it).reason == "no answer found"
    numbers = small("secret", kind="number")
    it = numbers.load("test")[0]
    assert it.answer.isdigit() and numbers.format_instruction == "Answer with one number in \\boxed{}."
    assert grade(numbers, f"\\boxed{{{it.answer}}}", it).correct
    # A bare number is found as the last number / last line.
    assert grade(numbers, f"I think it is\n{it.answer}", it).correct


def test_chance_rates_at_defaults():
    expected = {"secret": 1 / 8, "relay": 1 / 3, "split_hop": 1 / 4, "tipsheet": 1 / 3}
    for name, rate in expected.items():
        task = small(name)
        assert task.chance_rate(task.load("test")) == pytest.approx(rate)
    assert small("secret", options=2).chance_rate(small("secret", options=2).load("test")) == 0.5
    task = small("split_hop", agents=6, distractors=2)
    assert task.chance_rate(task.load("test")) == pytest.approx(1 / 3)


# ---------------------------------------------------------------- the information is really split


@pytest.mark.parametrize("kind", ["word", "number"])
def test_secret_is_only_in_view_zero(kind):
    task = small("secret", kind=kind, agents=4, options=12)
    for it in task.load("test"):
        assert re.search(rf"\b{it.answer}\b", it.views[0])
        assert all(re.search(rf"\b{it.answer}\b", v) is None for v in it.views[1:])
        assert len(it.meta["options"]) == 12
        # The question lists it only among the options, never as "the secret".
        assert it.question.count(it.answer) == 1


def relay_solve(views: tuple[str, ...], obj: str) -> tuple[str, str]:
    """(final holder, initial holder) of `obj`, applying every agent's swaps in chain order."""
    text = " ".join(views)
    holds = {m[1]: m[2] for m in re.finditer(r"(\w+) has the (\w+)\.", text)}
    initial = next(p for p, o in holds.items() if o == obj)
    for a, b in re.findall(r"Then (\w+) and (\w+) swap\.", text):
        holds[a], holds[b] = holds[b], holds[a]
    return next(p for p, o in holds.items() if o == obj), initial


@pytest.mark.parametrize(
    "kw", [{}, {"agents": 2}, {"agents": 3}, {"agents": 6, "people": 5, "swaps_per_agent": 2}]
)
def test_relay_needs_every_view(kw):
    task = small("relay", **kw)
    items = task.load("test")
    initial_right = 0
    for it in items:
        obj = re.match(r"Who has the (\w+) at the end\?", it.question)[1]
        final, initial = relay_solve(it.views, obj)
        assert final == it.answer and initial == it.meta["initial_holder"]
        initial_right += initial == it.answer
        # Upstream agents other than the first hold swaps only; the Solver holds nothing.
        assert all(v.startswith("Then ") for v in it.views[1:-1])
        assert it.views[0].count(" has the ") == task.people
    people = task.people
    # "The initial holder" is right about as often as a guess (1/people), not more.
    assert initial_right / len(items) < 1.6 / people
    assert initial_right / len(items) > 0.4 / people


def test_relay_swaps_do_not_undo_themselves_by_default():
    task = small("relay")  # 3 swaps: an end with the initial holder needs no repeated swap
    for it in task.load("test"):
        swaps = re.findall(r"Then (\w+) and (\w+) swap\.", " ".join(it.views))
        assert len(swaps) == 3
        assert all({a, b} != {c, d} for (a, b), (c, d) in zip(swaps, swaps[1:]))


def follow(views: tuple[str, ...], start: str, hops: int) -> str:
    links = dict(re.findall(r"(\w+)'s mentor is (\w+)\.", " ".join(views)))
    name = start
    for _ in range(hops):
        name = links[name]
    return name


@pytest.mark.parametrize(
    "kw", [{}, {"agents": 2}, {"agents": 6, "distractors": 3}, {"hops": 2}, {"distractors": 1}]
)
def test_split_hop_follows_facts_across_views(kw):
    task = small("split_hop", **kw)
    for it in task.load("test"):
        m = re.match(r"Start at (\w+) and follow mentor links (once|twice|\d+ times)\.", it.question)
        hops = {"once": 1, "twice": 2}.get(m[2]) or int(m[2].split()[0])
        assert hops == task.hops
        assert follow(it.views, m[1], hops) == it.answer
        # One real hop per upstream view: the chain cannot be followed without every view up to `hops`.
        for i in range(hops):
            links = dict(re.findall(r"(\w+)'s mentor is (\w+)\.", it.views[i]))
            assert links.get(it.meta["chain"][i]) == it.meta["chain"][i + 1]
            assert len(links) == task.distractors + 1
        # The options are where every chain is after `hops` links: the hop-`hops` view holds one fact per option.
        links = dict(re.findall(r"(\w+)'s mentor is (\w+)\.", it.views[hops - 1]))
        assert (
            set(links.values()) == set(it.meta["options"]) and len(it.meta["options"]) == task.distractors + 1
        )


def test_split_hop_fewer_hops_than_agents():
    task = small("split_hop", agents=5, hops=2)
    it = task.load("test")[0]
    assert "twice" in it.question and it.answer == it.meta["chain"][2]
    assert follow(it.views, it.meta["chain"][0], 4) != it.answer  # "follow to the end" is wrong


GOOD = {g: 1 for g, _ in TRAITS} | {b: -1 for _, b in TRAITS}


def tip_scores(text: str) -> dict[str, int]:
    """Each distinct (flat, trait) fact once."""
    facts = set(re.findall(r"(\w+) is (\w+)\.", text))
    scores: Counter[str] = Counter()
    for flat, word in facts:
        scores[flat] += GOOD[word]
    return scores


def best(scores: dict[str, int], options: list[str]) -> list[str]:
    top = max(scores.get(o, 0) for o in options)
    return [o for o in options if scores.get(o, 0) == top]


@pytest.mark.parametrize(
    "kw", [{}, {"agents": 3}, {"agents": 6}, {"options": 5}, {"agents": 5, "options": 2}]
)
def test_tipsheet_needs_every_view(kw):
    task = get_task("tipsheet", n_train=50, n_test=600, **kw)
    items = task.load("test")
    single_right = [0.0] * task.upstream
    for it in items:
        opts = it.meta["options"]
        full = best(tip_scores(it.full_view), opts)
        assert full == [it.answer]  # the full information picks the winner, uniquely
        for j, view in enumerate(it.views[:-1]):
            assert len(re.findall(r"(\w+) is (\w+)\.", view)) == len(opts)  # one cue per flat
            picks = best(tip_scores(view), opts)
            single_right[j] += (it.answer in picks) / len(picks)  # ties split evenly
    chance = task.chance_rate(items)
    for right in single_right:
        # Best-looking from one view alone: at chance (by construction), far below the full view's 100%.
        assert right / len(items) < chance + 0.08
    assert len(items[0].meta["options"]) == task.options


def test_tipsheet_single_view_signs_carry_no_winner_information():
    """From one view, the pattern of good/bad cues says nothing about which position wins."""
    task = get_task("tipsheet", n_train=50, n_test=2000)
    by_pattern: dict[tuple, Counter] = {}
    for it in task.load("test"):
        view = it.views[1]
        signs = {flat: GOOD[w] for flat, w in re.findall(r"(\w+) is (\w+)\.", view)}
        order = sorted(signs, key=lambda f: (-signs[f], f))
        pattern = tuple(signs[f] for f in order)
        by_pattern.setdefault(pattern, Counter())[signs[it.answer]] += 1
    # Within a sign pattern, the winner's sign follows the pattern's own share of good cues.
    for pattern, counts in by_pattern.items():
        total = sum(counts.values())
        if total < 200 or len(set(pattern)) == 1:
            continue
        share_good = pattern.count(1) / len(pattern)
        assert counts[1] / total == pytest.approx(share_good, abs=0.1)


def test_tipsheet_two_agents_holds_everything_upstream():
    task = small("tipsheet", agents=2)
    for it in task.load("test"):
        assert best(tip_scores(it.views[0]), it.meta["options"]) == [it.answer]


def test_tipsheet_rule_is_stated():
    fmt = get_task("tipsheet").format_instruction
    assert all(g in fmt and b in fmt for g, b in TRAITS) and "once" in fmt


# ---------------------------------------------------------------- arguments


def test_registry_passes_kwargs():
    task = get_task("secret", agents=3, seed=1)
    assert task.agents == 3 and task.seed == 1
    assert len(task.load("test")[0].views) == 3


@pytest.mark.parametrize(
    ("name", "kw", "arg"),
    [
        ("secret", {"agents": 1}, "agents"),
        ("secret", {"agents": "4"}, "agents"),
        ("secret", {"seed": 1.5}, "seed"),
        ("secret", {"n_train": -1}, "n_train"),
        ("secret", {"n_test": True}, "n_test"),
        ("secret", {"options": 1}, "options"),
        ("secret", {"options": 33}, "options"),
        ("secret", {"kind": "colour"}, "kind"),
        ("relay", {"people": 2}, "people"),
        ("relay", {"people": 13}, "people"),
        ("relay", {"swaps_per_agent": 0}, "swaps_per_agent"),
        ("split_hop", {"hops": 0}, "hops"),
        ("split_hop", {"hops": 4}, "hops"),
        ("split_hop", {"agents": 3, "hops": 3}, "hops"),
        ("split_hop", {"distractors": 0}, "distractors"),
        ("split_hop", {"distractors": 20}, "distractors"),
        ("tipsheet", {"options": 1}, "options"),
        ("tipsheet", {"options": 7}, "options"),
        ("tipsheet", {"agents": 7}, "agents"),
    ],
)
def test_bad_arguments_name_the_argument(name, kw, arg):
    with pytest.raises(ValueError, match=arg):
        get_task(name, **kw)


def test_unknown_keyword_is_rejected():
    with pytest.raises(TypeError):
        get_task("relay", options=3)


@pytest.mark.parametrize("name", TASKS)
def test_unknown_split(name):
    with pytest.raises(ValueError, match="validation"):
        small(name).load("validation")


def test_empty_splits_and_small_spaces():
    assert small("secret", n_train=0).load("train") == []
    # 90 * 89 ordered pairs, either one the secret: 16020 distinct items at most.
    with pytest.raises(RuntimeError, match="distinct"):
        get_task("secret", kind="number", options=2, n_train=0, n_test=17000).load("test")
