"""`key=value` overrides (`diffmas train/compare/eval CONFIG key=value ...`, `--task-arg`, `--template-arg`): the
values they parse to, pinned from the hand-written parser they replaced, and the one-line errors of bad ones."""

from __future__ import annotations

import pytest

from diffmas.configs import apply_overrides

BASE = {
    "optim": {"lr": 5e-5, "steps": 100},
    "data": {"task": "secret", "task_args": {"agents": 4, "seed": 1}},
}

# (override, the value at its key)
PARSED = [
    ("a.b=3", 3),
    ("a.b=-2", -2),
    ("a.b=0.25", 0.25),
    ("a.b=true", True),
    ("a.b=false", False),
    ("a.b=null", None),
    ("a.b=~", None),
    ("a.b=", None),
    ("a.b=hello world", "hello world"),
    ("a.b='007'", "007"),
    ('a.b="3"', "3"),
    ("a.b=[0, 2]", [0, 2]),
    ("a.b=[]", []),
    ("a.b={x: 1, y: [a, b]}", {"x": 1, "y": ["a", "b"]}),
    ("a.b={}", {}),
    ("a.b=a=b", "a=b"),
    ("a.b=a:b", "a:b"),
    ("a.b=runs/x.yaml", "runs/x.yaml"),
    ("a.b=smollm2-135m", "smollm2-135m"),
    ("a.b=Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B"),
    ("a.b=${x}", "${x}"),  # no interpolation: the text as written
    (" a.b = 3", 3),  # spaces around the key are dropped
]


@pytest.mark.parametrize(("item", "value"), PARSED)
def test_an_override_parses_as_before(item, value):
    out = apply_overrides({}, [item])
    assert out == {"a": {"b": value}}
    assert type(out["a"]["b"]) is type(value)


def test_numbers_in_exponent_form_reach_a_float_field():
    """PyYAML read `1e-4` as text (pydantic then made a float of it); either way the config holds the number."""
    from diffmas.training.config import OptimSection

    out = apply_overrides({}, ["optim.lr=1e-4"])
    assert OptimSection.model_validate(out["optim"]).lr == pytest.approx(1e-4)


def test_a_date_stays_text():
    """PyYAML made a `datetime.date` of `2024-01-01`, which no config field takes; OmegaConf's loader keeps it text."""
    assert apply_overrides({}, ["run.name=2024-01-01"]) == {"run": {"name": "2024-01-01"}}


def test_overrides_lay_over_a_config_and_leave_it_unchanged():
    out = apply_overrides(BASE, ["optim.lr=0.25", "data.task_args.agents=2", "run.out=runs/x"])
    assert out == {
        "optim": {"lr": 0.25, "steps": 100},
        "data": {"task": "secret", "task_args": {"agents": 2, "seed": 1}},
        "run": {"out": "runs/x"},
    }
    assert BASE["optim"]["lr"] == 5e-5 and BASE["data"]["task_args"]["agents"] == 4


def test_a_mapping_value_replaces_the_section_and_later_overrides_win():
    """`key={...}` replaces what the config had there (it is not merged into it); of two overrides of one key the
    last holds."""
    out = apply_overrides(BASE, ["data.task_args={agents: 2}", "optim.lr=1", "optim.lr=2"])
    assert out["data"]["task_args"] == {"agents": 2}
    assert out["optim"]["lr"] == 2


def test_a_value_replaced_by_a_section_and_back():
    assert apply_overrides({"a": 1}, ["a={b: 2}"]) == {"a": {"b": 2}}
    assert apply_overrides({"a": {"b": 2}}, ["a=3"]) == {"a": 3}


ERRORS = [
    ("nope", "not of the form key=value"),
    ("=3", "empty key part"),
    ("a..b=3", "empty key part"),
    ("a.=3", "empty key part"),
    ("data.task.x=1", "'task' is not a section"),
    ("a.b=[1, 2", "not valid YAML"),
    ("a.b={x: 1", "not valid YAML"),
    ("data.task_args={agents:2}", "write {agents: 2}"),
    ("a[0]=1", "cannot read it as dotted.key=value"),
]


@pytest.mark.parametrize(("item", "message"), ERRORS)
def test_a_bad_override_is_a_one_line_error_naming_it(item, message):
    with pytest.raises(ValueError, match="override") as e:
        apply_overrides(BASE, [item])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert repr(item) in str(e.value)


def test_the_glued_mapping_error_names_both_spellings():
    with pytest.raises(ValueError) as e:
        apply_overrides({}, ["data.task_args={agents:2}"])
    assert "{agents: 2}" in str(e.value) and "data.task_args.agents=2" in str(e.value)
