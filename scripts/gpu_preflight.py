"""The GPU check's first step (scripts/gpu_check.sh): every package the check imports, checked up front against
pyproject.toml's version ranges, and the versions that matter printed, so that a missing or too-old package on the
lent machine costs one line of output instead of a run of failing tests. Standard library only until the checks
pass (it must run on a bare image). Exit 3 names every problem at once.

    python scripts/gpu_preflight.py [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# distribution -> module, for what tests/gpu and bench/paper_scale import (diffmas' configs need pydantic, its
# console rich, its prompts yaml; datasets, math-verify, reasoning-gym and the sandbox are not on this path)
NEEDED = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "accelerate": "accelerate",
    "safetensors": "safetensors",
    "pydantic": "pydantic",
    "pyyaml": "yaml",
    "rich": "rich",
    "typer": "typer",
    "filelock": "filelock",
    "numpy": "numpy",
    "pytest": "pytest",
}


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{distribution: version specifier} of pyproject's runtime dependencies (dev tools: pytest>=8)."""
    import re

    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = data["dependencies"] + data.get("optional-dependencies", {}).get("dev", [])
    out = {}
    for line in lines:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*([^;]*)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2).strip()
    return out


def problems(needed: dict[str, str] = NEEDED) -> list[str]:
    """One line per package that is missing, fails to import, or is outside pyproject's range."""
    specs = requirements()
    out = []
    for dist, module in needed.items():
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            out.append(f"{dist}: not installed (carry its wheel: docs/gpu.md)")
            continue
        try:
            importlib.import_module(module)
        except Exception as e:  # an import error deep inside (a wrong torch build, a missing need) counts too
            out.append(f"{dist} {version}: `import {module}` fails: {type(e).__name__}: {e}")
            continue
        spec = specs.get(dist, "")
        if spec and not _contains(spec, version):
            out.append(f"{dist} {version}: pyproject.toml wants {dist}{spec} (carry its wheel: docs/gpu.md)")
    return out


def _contains(spec: str, version: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return SpecifierSet(spec).contains(Version(version).base_version, prereleases=True)


def report(device: str) -> list[str]:
    """The lines that say what the numbers were measured on."""
    import platform

    import torch

    lines = [f"python {platform.python_version()} ({sys.executable})"]
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        lines.append(
            f"device: {props.name}, {props.multi_processor_count} SMs, {total / 2**30:.1f} GiB "
            f"({free / 2**30:.1f} free), driver {_driver()}, CUDA {torch.version.cuda}"
        )
    else:
        lines.append(
            f"device: cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
        )
    versions = ", ".join(
        f"{d} {md.version(d)}" for d in ("torch", "transformers", "peft", "accelerate", "pydantic")
    )
    lines.append(versions)
    import diffmas

    lines.append(f"diffmas from {Path(diffmas.__file__).parent}")
    return lines


def _driver() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = p.parse_args(argv)
    found = problems()
    if not found:
        import diffmas

        src = (ROOT / "src").resolve()
        if src not in Path(diffmas.__file__).resolve().parents:
            found.append(
                f"diffmas imported from {diffmas.__file__}, not from {src}: PYTHONPATH must start with src"
            )
    if args.device == "cuda" and not found:
        import torch

        if not torch.cuda.is_available():
            found.append(f"torch {torch.__version__} sees no CUDA device (run with --cpu for the CPU part)")
    for line in found:
        print(f"gpu_check: {line}", file=sys.stderr)
    if found:
        return 3
    for line in report(args.device):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
