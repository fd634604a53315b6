"""Run by test_ddp.py under `python -m torch.distributed.run --nproc_per_node 2`: train a tiny model, dump weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

out = Path(sys.argv[1])
cfg = TrainConfig.model_validate(
    {
        "data": {
            "task": str(Path(__file__).parents[1] / "assets" / "arith.jsonl"),
            "split": "test",
            "eval_split": None,
        },
        "method": {"latent_steps": 2},
        "optim": {"steps": 3, "batch_size": 1, "lr": 1e-2},
        "run": {"out": str(out / "run"), "report_to": [], "save_every": 100},
    }
)
trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
trainer.setup()
result = trainer.train()
rank = trainer.rank
weights = {n: p.detach().clone() for n, p in trainer.backbone.model.named_parameters() if "lora_" in n}
torch.save(
    {"weights": weights, "world": trainer.world, "losses": [r["loss"] for r in result["history"]]},
    out / f"rank{rank}.pt",
)
