from __future__ import annotations

import pytest

from diffmas.roles import RoleChain, TextMessage, encode_prompt, format_context
from diffmas.testing import tiny_tokenizer


def test_default_chain_is_planner_critic_refiner_solver():
    chain = RoleChain.default()
    assert [r.name for r in chain.roles] == ["planner", "critic", "refiner", "solver"]
    assert chain.solver.name == "solver"
    text = chain.solver.render("What is 2+2?", "Box it.")
    assert "What is 2+2?" in text and "Box it." in text and "{" not in text.replace("\\boxed{}", "")
    assert "\n\n\n" not in text


def test_text_context_is_rendered_into_prompts():
    chain = RoleChain.default()
    ctx = format_context([TextMessage("planner", "Add the numbers.")])
    text = chain.roles[1].render("What is 2+2?", "", ctx)
    assert "[Planner]: Add the numbers." in text


def test_roles_from_yaml(tmp_path):
    path = tmp_path / "roles.yaml"
    path.write_text(
        "roles:\n  - name: a\n    template: 'Think: {question}'\n  - name: b\n    template: '{format} {question}'\n"
    )
    chain = RoleChain.from_yaml(path)
    assert [r.name for r in chain.roles] == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("roles: []\n", "at least one role"),
        ("roles:\n  - name: a\n", "exactly the fields"),
        ("roles:\n  - name: a\n    template: 'no question'\n", "must contain {question}"),
        ("roles:\n  - name: a\n    template: '{question} {oops}'\n", "unknown placeholders"),
        ("rols: []\n", "'roles' list"),
        (
            "roles:\n  - name: a\n    template: '{question}'\n  - name: a\n    template: '{question}'\n",
            "unique",
        ),
    ],
)
def test_bad_roles_yaml_names_the_problem(tmp_path, body, message):
    path = tmp_path / "roles.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        RoleChain.from_yaml(path)


def test_missing_roles_file():
    with pytest.raises(FileNotFoundError, match="roles file not found"):
        RoleChain.from_yaml("/nonexistent/roles.yaml")


def test_prompt_uses_chat_template():
    tok = tiny_tokenizer()
    ids = encode_prompt(tok, "hello")
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{question:>3000000000}", r"width or precision of 3,000,000,000; at most 10,000"),
        ("{question:.20000}", "width or precision of 20,000"),
        ("{question:>{view}}", "nests a field"),
        ("{question} }", "not a valid template"),
    ],
)
def test_huge_or_nested_format_specs_are_refused_at_load(template, message):
    with pytest.raises(ValueError, match=message):
        RoleChain.from_mapping({"roles": [{"name": "s", "template": template}]}, source="r.yaml")


def test_modest_format_specs_still_render():
    chain = RoleChain.from_mapping({"roles": [{"name": "s", "template": "Q:{question:>6}|"}]})
    assert chain.solver.render("hi") == "Q:    hi|"
