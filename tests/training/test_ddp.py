"""Two CPU processes with gloo: both ranks must end with identical adapter weights that differ from the start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch


def test_two_process_data_parallel_keeps_ranks_identical(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on a free port of localhost: no fixed port to collide with another run
        "--nproc_per_node",
        "2",
        str(worker),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert r0["world"] == r1["world"] == 2
    assert r0["losses"] == r1["losses"]  # the logged loss is the mean across ranks
    assert r0["weights"].keys() == r1["weights"].keys()
    for name, w in r0["weights"].items():
        torch.testing.assert_close(w, r1["weights"][name], atol=0, rtol=0, msg=name)
    assert any(w.abs().sum() > 0 for n, w in r0["weights"].items() if "lora_B" in n)
