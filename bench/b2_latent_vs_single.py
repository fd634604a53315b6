"""B2: `latent_mas` vs `single` (the Solver alone), wall time per item. Target: at most 1.3x.

The end-to-end ratio is the benchmark. The two methods may write answers of different lengths, so outside `--quick`
a controlled pair is measured in the same loop: both forced to decode exactly the answer cap (stop tokens ignored),
which isolates what the latent chain itself costs (3 upstream prompts + their latent steps).
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
    paired_ratio,
    questions,
    sibling,
    sizes_for,
    time_interleaved,
    warm,
)
from diffmas.methods import Method, MethodConfig

ID = "B2"
WHAT = "latent_mas vs single: wall time per item"


def forced_length(method: Method) -> Method:
    """A copy that ignores stop tokens, so every answer is exactly `max_new_tokens` long."""
    forced = sibling(method)
    forced.stop_ids = set()
    return forced


def run(model: str = "tiny", repeats: int | None = None, quick: bool = False) -> BenchResult:
    sizes = sizes_for(model, quick)
    backbone = load_model(model)
    qs = questions(sizes.batch)
    config = MethodConfig(latent_steps=sizes.latent_steps, max_new_tokens=sizes.max_new_tokens)
    methods = {name: make_method(name, backbone, config) for name in ("latent_mas", "single")}
    if not quick:
        methods |= {f"{name} (fixed length)": forced_length(m) for name, m in list(methods.items())}
    calls = {name: Rollout(m, qs) for name, m in methods.items()}
    times = time_interleaved(
        calls, repeats or sizes.repeats, warmup={n: warm(m, qs) for n, m in methods.items()}
    )
    b = sizes.batch
    ratio = paired_ratio(times["latent_mas"], times["single"])
    measurements = [
        (
            "sizes",
            f"batch {b}, {sizes.latent_steps} latent steps/agent, answers <= {sizes.max_new_tokens} new tokens",
        ),
    ]
    for name, call in calls.items():
        answer = sum(len(o.answer.token_ids) for o in call.last) / b
        capped = sum(not o.answer.stopped and not o.answer.matched for o in call.last)
        measurements.append(
            (
                f"{name} s/item",
                f"{fmt_times(times[name], b)}, answer {answer:.1f} tokens/item, {capped}/{b} cut at the cap",
            )
        )
    if not quick:
        fixed = paired_ratio(times["latent_mas (fixed length)"], times["single (fixed length)"])
        measurements.append(("latent/single at equal answer length", f"{fixed:.2f}x"))
    return BenchResult(
        id=ID,
        what=WHAT,
        ratio=ratio,
        ratio_label="latent_mas / single wall time per item",
        target="<= 1.3x",
        passed=ratio <= 1.3,
        model=model,
        measurements=measurements,
        quick=quick,
    )


if __name__ == "__main__":
    sys.exit(main(ID, WHAT, run))
