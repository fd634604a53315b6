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


# ------------------------------------------------------------ rendering as written (and the packaged chains' strip)


def test_a_roles_file_template_is_rendered_exactly_as_written(tmp_path):
    """LatentMAS-style prompts that begin or end with a newline keep it: one token fewer changes greedy answers."""
    path = tmp_path / "peer.yaml"
    path.write_text('roles:\n  - name: s\n    template: "\\nQuestion: {question}\\n{format}\\n"\n')
    chain = RoleChain.from_yaml(path)
    assert chain.solver.template == "\nQuestion: {question}\n{format}\n"
    assert chain.solver.render("What is 2+2?", "Box it.") == "\nQuestion: What is 2+2?\nBox it.\n"
    assert chain.solver.render("  padded  ") == "\nQuestion:   padded  \n\n"


def _old_render(template: str, question: str, format: str, context: str, view: str) -> str:
    """How every prompt was rendered before templates were reproduced as written (kept for packaged chains)."""
    for name, value in (("context", context), ("view", view)):
        if not value:
            template = template.replace("{" + name + "}\n", "").replace("{" + name + "}", "")
    return template.format(question=question, format=format, context=context, view=view).strip()


@pytest.mark.parametrize("name", ["default", "comm", "comm2", "comm3"])
def test_packaged_chains_render_byte_identical_prompts(name):
    chain = RoleChain.packaged(name)
    cases = [
        ("What is 2+2?", "Box it.", "", ""),
        ('def add(a, b):\n    """Add."""\n', "", "Messages from your team:\n[Planner]: x\n", ""),
        ("\n  Which word?  \n", "Answer with one word.", "", "The word is red.\n"),
    ]
    for role in chain.roles:
        assert role.strip
        for case in cases:
            assert role.render(*case) == _old_render(role.template, *case), (name, role.name, case)


def test_strip_is_a_boolean_chain_key():
    chain = RoleChain.from_mapping({"strip": True, "roles": [{"name": "s", "template": "{question}\n"}]})
    assert chain.solver.render(" q ") == "q"
    with pytest.raises(ValueError, match="'strip' must be true or false"):
        RoleChain.from_mapping({"strip": "yes", "roles": [{"name": "s", "template": "{question}"}]})
