"""B1: `latent_mas` vs `text_mas` (same model, questions and roles; upstream text capped at 256 new tokens).

Target: latent at least 4x faster per item, with at least 70% fewer generated tokens. Both methods answer the same
batch; wall time per item is the batch's time divided by its size.
"""

from __future__ import annotations

import sys

from bench.common import (
    BenchResult,
    Rollout,
    fmt_times,
    load_model,
    main,
    make_method,
    median,
    paired_ratio,
    questions,
    sizes_for,
    time_interleaved,
    warm,
)
from diffmas.methods import MethodConfig

ID = "B1"
WHAT = "latent_mas vs text_mas: wall time per item (upstream text <= 256 new tokens) and generated tokens"


def run(model: str = "tiny", repeats: int | None = None, quick: bool = False) -> BenchResult:
    sizes = sizes_for(model, quick)
    backbone = load_model(model)
    qs = questions(sizes.batch)
    config = MethodConfig(
        latent_steps=sizes.latent_steps,
        max_new_tokens=sizes.max_new_tokens,
        upstream_max_new_tokens=sizes.upstream_max_new_tokens,
    )
    methods = {name: make_method(name, backbone, config) for name in ("latent_mas", "text_mas")}
    calls = {name: Rollout(m, qs) for name, m in methods.items()}
    times = time_interleaved(
        calls, repeats or sizes.repeats, warmup={n: warm(m, qs) for n, m in methods.items()}
    )
    tokens = {name: sum(o.generated_tokens for o in call.last) for name, call in calls.items()}
    speedup = paired_ratio(times["text_mas"], times["latent_mas"])
    fewer = 1 - tokens["latent_mas"] / max(tokens["text_mas"], 1)
    b = sizes.batch
    measurements = [
        (
            "sizes",
            f"batch {b}, {sizes.latent_steps} latent steps/agent, upstream text <= "
            f"{sizes.upstream_max_new_tokens} new tokens, answers <= {sizes.max_new_tokens} new tokens",
        ),
        ("latent_mas s/item", fmt_times(times["latent_mas"], b)),
        ("text_mas   s/item", fmt_times(times["text_mas"], b)),
        (
            "generated tokens/item",
            f"latent_mas {tokens['latent_mas'] / b:.1f}, text_mas {tokens['text_mas'] / b:.1f} "
            f"({fewer:.1%} fewer)",
        ),
        ("ratio of medians", f"{median(times['text_mas']) / median(times['latent_mas']):.2f}x"),
    ]
    return BenchResult(
        id=ID,
        what=WHAT,
        ratio=speedup,
        ratio_label="text_mas / latent_mas wall time per item",
        target=">= 4x, with >= 70% fewer generated tokens",
        passed=speedup >= 4 and fewer >= 0.70,
        model=model,
        measurements=measurements,
        note=f"{fewer:.1%} fewer generated tokens",
        quick=quick,
    )


if __name__ == "__main__":
    sys.exit(main(ID, WHAT, run))
