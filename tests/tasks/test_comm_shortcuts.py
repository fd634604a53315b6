"""No communication task has a shortcut: on the generated test split, every rule that reads one agent's view (or
the question alone) scores within a small margin of chance, except the views a task names as sufficient by
design (the sender in `secret`). A channel result on a task that fails this would measure the shortcut."""

from __future__ import annotations

import pytest

from diffmas.tasks import get_task
from diffmas.tasks.base import Item
from diffmas.tasks.comm import single_view_rates, view_rules

# 1,000 test items: a rule at chance 1/4 has a standard error of 0.014, so 0.05 is over three of them.
N_TEST = 1000
MARGIN = 0.05
SETTINGS = [
    ("secret", {"agents": 2}),
    ("secret", {"agents": 4}),
    ("relay", {"agents": 3}),
    ("relay", {"agents": 4}),
    ("split_hop", {"agents": 3}),
    ("split_hop", {"agents": 4}),
    ("split_hop", {"agents": 4, "hops": 2}),
    ("tipsheet", {"agents": 3}),
    ("tipsheet", {"agents": 4}),
]


@pytest.mark.parametrize(("name", "args"), SETTINGS, ids=[f"{n}-{a}" for n, a in SETTINGS])
def test_no_single_view_rule_beats_chance(name, args):
    task = get_task(name, n_train=200, n_test=N_TEST, **args)
    items = task.load("test")
    chance = task.chance_rate(items)
    assert chance is not None
    rates = single_view_rates(items, skip_views=task.sufficient_views)
    rule, best = max(rates.items(), key=lambda kv: kv[1])
    assert best <= chance + MARGIN, f"{name} {args}: rule {rule} scores {best:.3f}, chance {chance:.3f}"
    assert any(r.startswith("v") for r in rates)  # the per-view rules were computed, not only the question's


def test_the_sufficient_view_is_what_makes_secret_answerable():
    """The check has teeth: the sender's view of `secret` names the answer, and the rule finds it."""
    task = get_task("secret", agents=2, n_train=50, n_test=200)
    rates = single_view_rates(task.load("test"))
    assert rates["v0:mentioned"] == 1.0 and task.sufficient_views == (0,)


def test_the_old_split_hop_options_had_the_last_agents_shortcut():
    """The rule that caught split_hop's old shortcut: options listing every chain name let the last agent's two
    targets score 50% (one real, one decoy); rebuilt here from the old option rule on today's views."""
    task = get_task("split_hop", agents=3, distractors=1, n_train=50, n_test=400)
    old = []
    for it in task.load("test"):
        chains = [it.meta["chain"]]
        # the decoy chain's names: the facts of both views that are not on the real chain
        facts = [f.split("'s mentor is ") for v in it.views[:2] for f in v.rstrip(".").split(". ")]
        decoy = [b.rstrip(".") for a, b in facts if a not in chains[0]]
        names = chains[0][1:] + decoy
        old.append(Item(it.id, it.question, it.answer, meta={**it.meta, "options": names}, views=it.views))
    assert single_view_rates(old)["v1:object"] == pytest.approx(0.5)
    assert single_view_rates(task.load("test"))["v1:object"] == pytest.approx(0.5)  # 2 options now: chance
    assert task.chance_rate(task.load("test")) == pytest.approx(0.5)


def test_view_rules_match_whole_names_only():
    item = Item(
        "x", "Options: Isk, Brask.", "Isk", meta={"options": ["Isk", "Brask"]}, views=("Brask is here.", "")
    )
    rules = view_rules(item)
    assert rules["v0:mentioned"] == ["Brask"] and rules["v0:unmentioned"] == ["Isk"]
    assert rules["v1:mentioned"] == ["Isk", "Brask"]  # an empty view names nothing: a uniform guess
