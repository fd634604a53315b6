"""Fetch the wheels the GPU check carries to the lent machine (docs/gpu.md) into `.whl/`.

The machine has no network: packages travel as wheels inside the working tree (64 MiB per call) and are installed
there with `pip install --no-index --no-deps --target`. This fetches exactly the versions and files pinned in
scripts/gpu_wheels.txt (`pip download --require-hashes`, CPython 3.12, manylinux x86_64 by default), never torch,
then checks what pip cannot check without installing: one wheel per pinned package and nothing else in the folder,
the total under 20 MiB, and every runtime need of each wheel met by another carried wheel or by a package of the
image (scripts/gpu_image.txt; a need whose image version is unknown only has to be present there).

    python scripts/fetch_gpu_wheels.py                      # .whl/ for the GPU machine (cp312)
    python scripts/fetch_gpu_wheels.py --python-version 3.11 --dest /tmp/w   # the CPU rehearsal's interpreter
    python scripts/fetch_gpu_wheels.py --check-only         # only check a folder fetched before
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "scripts" / "gpu_wheels.txt"
IMAGE = ROOT / "scripts" / "gpu_image.txt"
LIMIT = 20 * 2**20
NEVER = ("torch", "triton", "nvidia-")  # the image's CUDA build must stay the one that runs
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def normalize(name: str) -> str:
    """PEP 503 name: wheel files spell `pydantic_core`, requirements `pydantic-core`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path = PINS) -> dict[str, str]:
    """{normalized name: version} of the pinned requirements (continuation lines joined)."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s;]+)\s+(--hash=sha256:[0-9a-f]{64}\s*)+$", line)
        if not m:
            raise ValueError(f"{path}:{n}: not `name==version --hash=sha256:...`: {line[:60]}")
        out[normalize(m.group(1))] = m.group(2)
    return out


def image_packages(path: Path = IMAGE) -> dict[str, str | None]:
    """{normalized name: version or None (unknown)} of the image's packages."""
    out: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[normalize(name)] = version or None
    return out


def wheel_name(path: Path) -> tuple[str, str]:
    """(normalized name, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return normalize(name), version


def wheel_requires(path: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def unmet_needs(wheels: list[Path], python_version: str, image: dict[str, str | None]) -> list[str]:
    """Each runtime need (extras skipped, markers evaluated for Linux x86_64 and `python_version`) that neither a
    carried wheel nor the image meets: the import that would fail on the machine, found here."""
    from packaging.requirements import Requirement

    carried = dict(wheel_name(w) for w in wheels)
    env = {
        "python_version": python_version,
        "platform_machine": "x86_64",
        "sys_platform": "linux",
        "extra": "",
    }
    problems = []
    for w in wheels:
        for line in wheel_requires(w):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = normalize(req.name)
            version = carried.get(name) or image.get(name)
            if name not in carried and name not in image:
                problems.append(f"{w.name} needs {line}: neither carried nor in the image")
            elif version is not None and not req.specifier.contains(version, prereleases=True):
                where = "carried" if name in carried else "the image has"
                problems.append(f"{w.name} needs {line}: {where} {name} {version}")
    return problems


def check(dest: Path, python_version: str, limit: int = LIMIT) -> list[str]:
    """Everything wrong with the fetched folder (empty when it is ready to carry)."""
    wanted = pins()
    wheels = sorted(dest.glob("*.whl"))
    problems = []
    found: dict[str, list[str]] = {}
    for w in wheels:
        name, version = wheel_name(w)
        found.setdefault(name, []).append(version)
        if name.startswith(NEVER):
            problems.append(f"{w.name}: never carried (the image's CUDA build must stay)")
        elif name not in wanted:
            problems.append(f"{w.name}: not pinned in {PINS.name} (two versions stop the whole install)")
        elif version != wanted[name]:
            problems.append(f"{w.name}: {name} is pinned at {wanted[name]}")
    problems += [f"{n}: {len(v)} wheels ({', '.join(v)})" for n, v in found.items() if len(v) > 1]
    problems += [f"{n}=={v}: missing from {dest}" for n, v in wanted.items() if n not in found]
    total = sum(w.stat().st_size for w in wheels)
    if total > limit:
        problems.append(f"{total / 2**20:.1f} MiB in all, over the {limit / 2**20:.0f} MiB limit")
    return problems + unmet_needs(wheels, python_version, image_packages())


def fetch(dest: Path, python_version: str) -> None:
    """`pip download` of the pinned set; stale wheels of a pinned package are removed first."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = pins()
    for w in dest.glob("*.whl"):
        name, version = wheel_name(w)
        if name in wanted and version != wanted[name]:
            w.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    cmd += ["--require-hashes", "--implementation", "cp", "--python-version", python_version]
    cmd += [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd += ["-d", str(dest), "-r", str(PINS)]
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dest", type=Path, default=ROOT / ".whl", help="folder of wheels (default .whl/)")
    p.add_argument("--python-version", default="3.12", help="CPython of the machine (the image: 3.12)")
    p.add_argument("--check-only", action="store_true", help="check the folder, fetch nothing")
    args = p.parse_args(argv)
    if not args.check_only:
        fetch(args.dest, args.python_version)
    problems = check(args.dest, args.python_version)
    wheels = sorted(args.dest.glob("*.whl"))
    for w in wheels:
        print(f"  {w.stat().st_size / 2**20:6.2f} MiB  {w.name}")
    total = sum(w.stat().st_size for w in wheels)
    print(
        f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {args.dest} (cp{args.python_version.replace('.', '')})"
    )
    for problem in problems:
        print(f"fetch_gpu_wheels: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
