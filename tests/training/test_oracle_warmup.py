"""The reader's warm-up on the oracle channel (`method.oracle_warmup`): rows whose latent slots hold the answer's
token embeddings, annealed to none; the writers' own latents everywhere else, and always in evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffmas.methods import MethodConfig, get_method
from diffmas.realign import OracleRealigner, answer_slots, build_realigner
from diffmas.roles import RoleChain
from diffmas.testing import tiny_backbone
from diffmas.training import Batch, DiffMASTrainer, TrainConfig
from diffmas.training.objective import batch_loss, encode_target

ASSET = str(Path(__file__).parents[1] / "assets" / "views.jsonl")
FMT = "Give the final answer in \\boxed{}."


def _config(tmp_path, **method) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"task": ASSET, "split": "test", "eval_split": None},
            "method": {"latent_steps": 2, "eval_max_new_tokens": 4, "roles": "comm", "channel": "latents",
                       "realign": "learned", **method},
            "lora": {"adapters": "per_role"},
            "optim": {"steps": 6, "batch_size": 2, "lr": 1e-2},
            "run": {"out": str(tmp_path / "run"), "report_to": [], "save_every": 100},
        }
    )  # fmt: skip


def test_unfed_oracle_is_its_inner_realigner_and_fed_rows_take_the_slots():
    backbone = tiny_backbone("llama")
    inner = build_realigner("ridge", backbone.model)
    oracle = OracleRealigner(inner=inner)
    hidden = torch.randn(3, backbone.model.config.hidden_size)
    assert torch.equal(oracle(hidden), inner(hidden))
    slots = torch.randn(3, 2, hidden.shape[1])
    oracle.feed(slots, torch.tensor([True, False, True]))
    first, second = oracle(hidden), oracle(hidden)
    for out, k in ((first, 0), (second, 1)):
        assert torch.equal(out[0], slots[0, k]) and torch.equal(out[2], slots[2, k])
        assert torch.allclose(out[1], inner(hidden)[1])
    oracle.clear()
    assert torch.equal(oracle(hidden), inner(hidden))


def test_an_oracle_without_inner_refuses_what_it_cannot_feed():
    oracle = OracleRealigner()
    with pytest.raises(RuntimeError, match="not been fed"):
        oracle(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="nothing to feed the other rows"):
        oracle.feed(torch.zeros(2, 2, 4), torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"rows must be \[2\]"):
        oracle.feed(torch.zeros(2, 2, 4), torch.tensor([True, False, True]))


def _loss(method, oracle, items, rows, tokenizer) -> float:
    embed = method.backbone.model.get_input_embeddings()
    ids = torch.tensor([answer_slots(tokenizer, it.answer, 2) for it in items])
    oracle.feed(embed(ids).detach(), torch.tensor(rows))
    targets = [encode_target(tokenizer, f"The answer is \\boxed{{{it.answer}}}.") for it in items]
    batch = Batch([it.question for it in items], targets, views=[it.views for it in items])
    with torch.no_grad():
        loss, _ = batch_loss(method, batch, FMT, "full")
    oracle.clear()
    return float(loss)


def test_batch_equals_one_at_a_time_with_mixed_oracle_rows():
    from diffmas.tasks import get_task

    backbone = tiny_backbone("llama")
    oracle = OracleRealigner(inner=build_realigner("ridge", backbone.model))
    method = get_method(
        "latent_mas", backbone, RoleChain.load("comm"), MethodConfig(latent_steps=2, channel="latents"),
        realigner=oracle,
    )  # fmt: skip
    items = get_task(ASSET).load()[:2]
    tok = backbone.tokenizer
    together = _loss(method, oracle, items, [True, False], tok)
    alone = _loss(method, oracle, items[:1], [True], tok) + _loss(method, oracle, items[1:], [False], tok)
    assert together == pytest.approx(alone, rel=1e-4)
    # the oracle row's loss differs from the same row reading its writer's own latents
    assert _loss(method, oracle, items[:1], [True], tok) != pytest.approx(
        _loss(method, oracle, items[:1], [False], tok), rel=1e-4
    )


def test_warmup_anneals_logs_and_leaves_the_saved_realigner_unwrapped(tmp_path):
    trainer = DiffMASTrainer(
        _config(tmp_path, oracle_warmup={"start": 1, "end": 5}), backbone=tiny_backbone("llama")
    )
    trainer.setup()
    assert isinstance(trainer.method.realigner, OracleRealigner)
    assert trainer.method.realigner.inner is trainer.realigner  # the learned map is what trains and is saved
    rows = [r for r in trainer.train()["history"] if "loss" in r]
    assert [r["oracle_p"] for r in rows] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert rows[0]["oracle_rows"] == 1.0 and rows[-1]["oracle_rows"] == 0.0
    assert trainer.method.realigner.embeds is None  # cleared: the evaluation reads the writers' own latents
    assert rows[-1]["grad_norm_writer"] > 0  # the writers learn through their own latents once p < 1
    from safetensors.torch import load_file

    from diffmas.adapters import REALIGNER_FILE

    saved = load_file(str(tmp_path / "run" / "adapter" / REALIGNER_FILE))
    assert set(saved) == set(trainer.realigner.state_dict())  # the learned map's keys, not "inner.*"


def test_message_loss_is_the_writers_cross_entropy_on_the_slot_tokens_per_step():
    backbone = tiny_backbone("llama")
    head = backbone.model.get_output_embeddings().weight
    oracle = OracleRealigner(inner=build_realigner("ridge", backbone.model), head=head)
    d = backbone.model.config.hidden_size
    hidden = [torch.randn(3, d, requires_grad=True) for _ in range(2)]
    ids = torch.tensor([[1, 2], [3, 4], [5, 6]])
    oracle.feed(torch.randn(3, 2, d), torch.tensor([True, False, True]), ids=ids)
    for h in hidden:
        oracle(h)
    expected = torch.stack(
        [torch.nn.functional.cross_entropy(h @ head.T, ids[:, k]) for k, h in enumerate(hidden)]
    ).mean()
    got = oracle.message_loss()
    assert got is not None and torch.allclose(got, expected)
    got.backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in hidden)  # every row, oracle-fed or not
    oracle.clear()
    assert oracle.message_loss() is None
    oracle.feed(torch.randn(3, 2, d))  # no ids: no message loss
    oracle(hidden[0])
    assert oracle.message_loss() is None


def test_message_loss_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="needs the model's head"):
        OracleRealigner().feed(torch.zeros(2, 2, 4), ids=torch.zeros(2, 2, dtype=torch.long))
    oracle = OracleRealigner(head=torch.zeros(10, 4))
    with pytest.raises(ValueError, match=r"ids must be \[2, 2\]"):
        oracle.feed(torch.zeros(2, 2, 4), ids=torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ({"message_loss": 1.0}, "set method.oracle_warmup"),
        (
            {"message_loss": 1.0, "oracle_warmup": {"start": 1, "end": 5}, "grad_mode": "solver"},
            "freezes them",
        ),
    ],
)
def test_message_loss_config_is_checked(tmp_path, method, error):
    with pytest.raises(ValueError, match=error):
        _config(tmp_path, **method)


def test_message_loss_trains_the_writer_and_is_logged(tmp_path):
    cfg = _config(tmp_path, oracle_warmup={"start": 5, "end": 6}, message_loss=1.0)
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
    trainer.setup()
    rows = [r for r in trainer.train()["history"] if "loss" in r]
    assert all(r["oracle_p"] == 1.0 for r in rows)  # every row's slots hold the oracle's embeddings
    assert all(r["message"] > 0 for r in rows)
    # the logged loss is the CE per target token plus the weighted message loss
    assert all(abs(r["loss"] - (r["ce"] + r["message"])) < 1e-3 * max(1.0, r["loss"]) for r in rows)
    assert rows[-1]["message"] < rows[0]["message"]  # the writer learns to say the answer's tokens


def test_each_writer_is_fed_its_own_message_in_chain_order():
    """A chain of 3 writers with 2 latent steps takes 6 oracle slots, writer after writer: `message_ids` lays each
    row's messages out in that order, and the oracle hands them out in it."""
    from diffmas.items import Item
    from diffmas.methods.latent_mas import build_latent_trace
    from diffmas.realign import message_ids, writer_messages

    backbone = tiny_backbone("llama")
    tok = backbone.tokenizer
    roles = RoleChain.load("comm")
    writers = len(roles.upstream)
    item = Item(id="a", question="q", answer="dog", meta={"messages": ["cat", "hen", "dog"]})
    assert writer_messages(item, writers) == ["cat", "hen", "dog"]
    assert writer_messages(Item(id="b", question="q", answer="dog"), writers) == ["dog"] * writers
    with pytest.raises(ValueError, match="item a: meta.messages must list one message per upstream writer"):
        writer_messages(item, 2)
    ids = message_ids(tok, [writer_messages(item, writers)], 2)
    expected = [t for m in ("cat", "hen", "dog") for t in answer_slots(tok, m, 2)]
    assert ids.tolist() == [expected]

    d = backbone.model.config.hidden_size
    slots = torch.randn(1, 2 * writers, d)
    fed: list[torch.Tensor] = []

    class Recording(OracleRealigner):
        def forward(self, hidden):
            out = super().forward(hidden)
            fed.append(out)
            return out

    oracle = Recording()
    oracle.feed(slots)
    method = get_method("latent_mas", backbone, roles, MethodConfig(latent_steps=2), realigner=oracle)
    with torch.no_grad():
        build_latent_trace(method, ["q"], FMT, views=[("a", "b", "c", "")])
    assert len(fed) == 2 * writers
    assert all(torch.equal(out[0], slots[0, k]) for k, out in enumerate(fed))  # slot k at the chain's step k


def test_split_hop_items_name_each_agents_message():
    from diffmas.tasks import get_task

    task = get_task("split_hop", agents=4, n_train=0, n_test=20)
    for item in task.load("test"):
        chain = item.meta["chain"]
        assert item.meta["messages"] == chain[1:] and len(chain[1:]) == 3
        assert item.meta["messages"][-1] == item.answer  # the last writer's hop reaches the answer
        for k, message in enumerate(item.meta["messages"]):
            assert f"{chain[k]}'s mentor is {message}." in item.views[k]  # what agent k holds says it
