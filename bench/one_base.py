"""One base model in memory during `diffmas compare`: a small ladder (single, diffmas, single_sft: two trained
rungs, two adapter evaluations) on the arithmetic asset, each source tree in a FRESH subprocess. It prints the
weights' size, the resident set after loading, the peak resident set of the whole run, and the largest parameter
memory reachable from live modules (distinct storages, sampled every 0.2 s by a thread).

`--before SRC` runs the same ladder on another source tree too, e.g. the commit before adapters were attached to
the shared model instead of deep copies of it:

    git archive aa2c03c src | tar -x -C /tmp/before
    python -m bench.one_base --model smollm2-135m --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "tests" / "assets" / "arith.jsonl"


def parameter_bytes() -> int:
    """Bytes of the distinct parameter storages held by live modules (a copied model counts twice)."""
    import torch

    with warnings.catch_warnings():  # isinstance on every live object touches deprecated torch aliases
        warnings.simplefilter("ignore", FutureWarning)
        modules = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module)]
    storages = {}
    for m in modules:
        try:
            params = list(m.parameters(recurse=False))
        except AttributeError:  # a module `copy.deepcopy` is building right now: no parameters yet
            continue
        for p in params:
            storages[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    return sum(storages.values())


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _model_spec(model: str, work: Path) -> str:
    if model != "tiny":
        return model
    from diffmas.testing import tiny_backbone

    tiny = tiny_backbone("llama")
    tiny.model.save_pretrained(work / "tiny")
    tiny.tokenizer.save_pretrained(work / "tiny")
    return str(work / "tiny")


def child(model: str) -> dict:
    """Run the ladder in this process; its memory figures."""
    from diffmas.compare import CompareConfig, CompareRecipe

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = CompareConfig.model_validate(
            {
                "model": _model_spec(model, work),
                "task": str(ASSET),
                "train_split": "test",
                "test_split": "test",
                "n_train": 4,
                "n_test": 2,
                "methods": ["single", "diffmas", "single_sft"],
                "inference": {"latent_steps": 2, "max_new_tokens": 4, "upstream_max_new_tokens": 3},
                "training": {"optim": {"steps": 2, "batch_size": 2}, "method": {"eval_max_new_tokens": 3}},
            }
        )
        gc.collect()
        before = parameter_bytes()  # modules alive before the ladder (none in a fresh process)
        recipe = CompareRecipe(cfg, work / "run")
        recipe.setup()
        assert recipe.backbone is not None
        weights = sum({p.data_ptr(): p.nbytes for p in recipe.backbone.model.parameters()}.values())
        loaded = _status_kb("VmRSS") * 1024
        most = [parameter_bytes()]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                most.append(parameter_bytes())

        thread = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        thread.start()
        recipe.run()
        done.set()
        thread.join()
        return {
            "weights": weights,
            "rss_after_load": loaded,
            "peak_rss": _status_kb("VmHWM") * 1024,
            "max_parameter_bytes": max(most) - before,
            "seconds": round(time.perf_counter() - started, 1),
        }


def measure(model: str, src: Path) -> dict:
    """`child` in a fresh interpreter importing diffmas from `src`."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(
        [sys.executable, "-m", "bench.one_base", "--child", "--model", model],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="a load_backbone spec, or 'tiny'")
    ap.add_argument("--before", type=Path, help="another source tree (its src/ folder) to measure too")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model)))
        return 0
    runs = {"after": measure(args.model, ROOT / "src")}
    if args.before is not None:
        runs = {"before": measure(args.model, args.before), **runs}
    print(f"one base model during a compare ladder (single, diffmas, single_sft) on {args.model}")
    print("| | weights | RSS after load | peak RSS | most parameter memory live | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in runs.items():
        cells = [_gib(r[k]) for k in ("weights", "rss_after_load", "peak_rss", "max_parameter_bytes")]
        print(f"| {name} | " + " | ".join(cells) + f" | {r['seconds']} |")
    for name, r in runs.items():
        print(f"{name}: live parameter memory {r['max_parameter_bytes'] / r['weights']:.2f}x the weights")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
