"""`diffmas bench`: run the B1-B5 benchmarks of `bench/` (a source checkout) and print one table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer


def _repo_root() -> Path | None:
    """The checkout holding `bench/` (diffmas is installed editable from it), or None."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "bench" / "run_all.py").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    cwd = Path.cwd()
    return cwd if (cwd / "bench" / "run_all.py").is_file() else None


def bench_command(
    model: str = typer.Option("tiny", help="tiny, tiny-qwen2, smollm2-135m, ... (bench/common.py)"),
    quick: bool = typer.Option(False, "--quick", help="minimal sizes: checks that every benchmark runs"),
) -> None:
    """Run B1-B5 on MODEL (tiny, tiny-qwen2, smollm2-135m, ...) and print the table of ratios.

    The suite runs in a child process so that OpenMP's wait policy (PASSIVE, see bench/__init__.py) is set before
    torch starts, whatever this process has imported already.
    """
    root = _repo_root()
    if root is None:
        typer.echo("diffmas bench needs a source checkout with bench/ (run it from the repository)", err=True)
        raise typer.Exit(2)
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "bench.run_all", "--model", model] + (["--quick"] if quick else [])
    rc = subprocess.run(cmd, cwd=root, env=env).returncode
    if rc:
        raise typer.Exit(rc)
