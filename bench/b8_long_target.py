"""B8: peak memory of a training step on one long Solver target, the one-segment objective vs the chunked one.

"before": the Solver's prompt + target appended as ONE checkpointed segment and the head + cross-entropy run on
every target position at once (what `solver_loss` did; here `target_chunk=None`, `head_chunk` > target length).
"after": `target_chunk` segments, each checkpointed on its own, and the head + cross-entropy in `head_chunk`
chunks under `torch.utils.checkpoint`. Both with the trace's gradient checkpointing on (`checkpoint=True`), LoRA
r=8 on q/k/v/o, batch 1, a 64-token prompt; one forward + backward of the summed target cross-entropy.

Memory is measured as in B5 (see `bench/b5_memory.py`): each (variant, length) runs in a fresh subprocess with
glibc's mmap threshold pinned, and the number is the step's peak resident set (VmHWM after clear_refs) minus the
resident set before the step: what the step itself allocated. The children print their loss, which must agree.

The tiny model here has a 16k vocabulary (d=64, 4 layers) so the logit matrix matters as it does for real models;
`--model smollm2-135m` loads the embedded SmolLM2 (vocab 49152, d=576, 30 layers).

    python -m bench.b8_long_target [--model tiny|smollm2-135m] [--lengths 1024 4096 16384] [--chunk 1024]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "B8CHILD "
PROMPT = 64
VARIANTS = ("before", "after")


def tiny_model():
    """A random llama with a realistic vocabulary (16k) and a tiny body, fp32."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from diffmas.backbones import Backbone
    from diffmas.testing import tiny_tokenizer

    config = LlamaConfig(
        vocab_size=16384,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        initializer_range=0.02,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return Backbone(model=model, tokenizer=tiny_tokenizer(), name="tiny-16k-vocab", source="in-process")


class _Fixed:
    """Stands in for a Method inside `solver_loss`: the Solver's prompt is a fixed token list."""

    def __init__(self, prompt: list[int]):
        from diffmas.roles import RoleChain

        self.roles = RoleChain.default()
        self.prompt = prompt

    def encode(self, role, questions, fmt, contexts=None, views=None) -> list[list[int]]:
        return [self.prompt for _ in questions]


def child(model_name: str, length: int, variant: str, chunk: int, threads: int) -> dict:
    """One forward + backward in this (fresh) process; returns its memory, time and loss."""
    import torch

    from bench.common import load_model, peak_rss_bytes, reset_peak_rss, rss_bytes
    from diffmas.adapters import LoraSpec, add_lora
    from diffmas.trace import LatentTrace
    from diffmas.training import Batch
    from diffmas.training.objective import solver_loss

    torch.set_num_threads(threads)
    base = tiny_model() if model_name == "tiny" else load_model(model_name)
    lora, _ = add_lora(base, LoraSpec(), "shared", ["solver"])
    lora.model.train()
    vocab = int(lora.model.get_output_embeddings().weight.shape[0])
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, vocab, (PROMPT,), generator=g).tolist()
    target = torch.randint(1, vocab, (length,), generator=g).tolist()
    method, batch = _Fixed(prompt), Batch(["q"], [target])
    if variant == "before":
        options = {"target_chunk": None, "head_chunk": length + 1}
    else:
        options = {"target_chunk": chunk, "head_chunk": chunk}
    gc.collect()
    before = rss_bytes()
    exact = reset_peak_rss()
    t0 = time.perf_counter()
    trace = LatentTrace(lora.model, 1, checkpoint=True)
    loss, n = solver_loss(method, trace, batch, "", **options)  # type: ignore[arg-type]
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    return {
        "step_bytes": peak - before,
        "peak_reset": exact,
        "seconds": seconds,
        "loss": float(loss.detach()) / n,
    }


def spawn(model: str, length: int, variant: str, chunk: int, threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, "-m", "bench.b8_long_target", "--child", variant, "--model", model]
    cmd += ["--lengths", str(length), "--chunk", str(chunk), "--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise RuntimeError(f"B8 child failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--chunk", type=int, default=1024, help="target_chunk and head_chunk of 'after'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--only", choices=VARIANTS, default=None, help="run one variant (a long 'before' OOMs)"
    )
    parser.add_argument("--child", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.model, args.lengths[0], args.child, args.chunk, args.threads)
        print(MARK + json.dumps(result), flush=True)
        return
    variants = [args.only] if args.only else list(VARIANTS)
    print(
        f"B8 on {args.model}, chunk {args.chunk}, {args.threads} thread(s), prompt {PROMPT} tokens, batch 1"
    )
    rows: dict[str, list[tuple[int, dict]]] = {v: [] for v in variants}
    for length in args.lengths:
        for variant in variants:
            r = spawn(args.model, length, variant, args.chunk, args.threads)
            rows[variant].append((length, r))
            print(
                f"{variant:<6} target {length:>6}: step memory {r['step_bytes'] / 2**20:9.1f} MiB  "
                f"{r['seconds']:7.1f} s  loss {r['loss']:.6f}"
                + ("" if r["peak_reset"] else "  [peak reset unsupported: ru_maxrss]"),
                flush=True,
            )
    for variant, found in rows.items():
        if len(found) > 1:
            (n0, a), (n1, b) = found[0], found[-1]
            slope = (b["step_bytes"] - a["step_bytes"]) / (n1 - n0)
            print(f"{variant:<6} growth {n0} -> {n1}: {slope / 1024:.1f} KiB per target token", flush=True)


if __name__ == "__main__":
    main()
