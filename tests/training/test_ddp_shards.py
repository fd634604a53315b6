"""Two CPU processes share generation and evaluation: each rank generates text contexts and
answers held-out questions for its own chunks, and every rank ends with all of them; a sharded launch (FSDP,
DeepSpeed) is refused with a clear error rather than silently replicating the model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_share_text_contexts_and_evaluation(tmp_path):
    task = tmp_path / "sums.jsonl"
    rows = [
        {"id": f"s{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(12)
    ]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    worker = Path(__file__).with_name("shard_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), str(worker), str(tmp_path), str(task)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert (r0["generated"], r1["generated"]) == (8, 4)  # chunks of 8 items, every other one per rank
    assert r0["contexts"] == r1["contexts"] and sorted(r0["contexts"]) == sorted(r["id"] for r in rows)
    written = [
        json.loads(x)["id"] for x in (tmp_path / "run" / "text_contexts.jsonl").read_text().splitlines()
    ]
    assert written == [r["id"] for r in rows]  # in item order
    assert (r0["evaluated"], r1["evaluated"]) == (8, 4)
    assert r0["eval"] == r1["eval"] and r0["eval"]["eval_n"] == 12


@pytest.mark.parametrize("env", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_sharded_launch_is_refused(tmp_path, monkeypatch, env):
    from diffmas.testing import tiny_backbone
    from diffmas.training import DiffMASTrainer, TrainConfig

    monkeypatch.setenv(env, "true")
    asset = Path(__file__).parents[1] / "assets" / "arith.jsonl"
    cfg = TrainConfig.model_validate(
        {
            "data": {"task": str(asset), "split": "test"},
            "run": {"out": str(tmp_path / "run"), "report_to": []},
        }
    )
    with pytest.raises(ValueError, match="is not supported: diffmas does not shard the model"):
        DiffMASTrainer(cfg, backbone=tiny_backbone("llama")).setup()


def test_an_fsdp_accelerator_is_refused():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from diffmas.training.trainer import check_distributed

    with pytest.raises(ValueError, match="FSDP is not supported"):
        check_distributed(SimpleNamespace(distributed_type=DistributedType.FSDP))
    check_distributed(
        SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)
    )  # plain data parallel is fine
