"""Run by test_ddp_shards.py under `torch.distributed.run --nproc_per_node 2`: text contexts and the in-training
evaluation of a tiny text_mas_sft run, with how many questions this rank generated for."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from diffmas.methods.text_mas import TextMAS
from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

out, task = Path(sys.argv[1]), sys.argv[2]
counts = {"upstream": 0, "eval": 0}
upstream = TextMAS.upstream


def counting_upstream(self, questions, *args, **kwargs):
    counts["upstream"] += len(questions)
    return upstream(self, questions, *args, **kwargs)


TextMAS.upstream = counting_upstream
cfg = TrainConfig.model_validate(
    {
        "data": {"task": task, "split": "test", "eval_split": "test", "n_eval": 12},
        "method": {"train_method": "text_mas_sft", "upstream_max_new_tokens": 2, "eval_max_new_tokens": 2},
        "optim": {"steps": 1, "batch_size": 1},
        "run": {"out": str(out / "run"), "report_to": [], "save_every": 100},
    }
)
trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
trainer.setup()
generated = counts["upstream"]
run = trainer.method.run


def counting_run(questions, *args, **kwargs):
    counts["eval"] += len(questions)
    return run(questions, *args, **kwargs)


trainer.method.run = counting_run
TextMAS.upstream = upstream
result = trainer.train()
torch.save(
    {
        "contexts": trainer.contexts,
        "generated": generated,
        "evaluated": counts["eval"],
        "eval": result["eval"],
    },
    out / f"rank{trainer.rank}.pt",
)
