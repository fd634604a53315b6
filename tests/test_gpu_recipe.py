"""The GPU recipe (docs/gpu.md) without a GPU: the carried wheels' pins, the checks of a fetched folder, the
preflight's import check and gpu_check.sh's arguments. The recipe itself runs in CI as scripts/gpu_rehearsal.sh."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fetch = _load("fetch_gpu_wheels")
preflight = _load("gpu_preflight")


def _pyproject_requirement(name: str) -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, deps) if fetch.normalize(r.name) == name)


def test_the_pins_never_carry_torch_and_every_pin_has_a_hash():
    pins = fetch.pins()
    assert pins and not any(name.startswith(fetch.NEVER) for name in pins)
    text = fetch.PINS.read_text()
    assert text.count("--hash=sha256:") >= len(pins)


def test_transformers_is_carried_because_the_images_is_below_the_floor():
    """The decision: carry transformers (5.24, the newest on the image's huggingface-hub 1.33) rather than lower
    pyproject's floor to the image's 5.17. Fails if either side moves without the other."""
    floor = _pyproject_requirement("transformers")
    image = fetch.image_packages()["transformers"]
    carried = fetch.pins()["transformers"]
    assert image is not None and not floor.specifier.contains(image), (
        "the image's transformers would do: carry none"
    )
    assert floor.specifier.contains(carried), f"carried transformers {carried} is outside {floor}"


@pytest.mark.parametrize("name", ["peft", "pydantic"])
def test_the_other_carried_runtime_pins_are_inside_pyprojects_ranges(name):
    assert _pyproject_requirement(name).specifier.contains(fetch.pins()[name])


def test_a_bad_pin_line_is_refused_with_its_line(tmp_path):
    path = tmp_path / "pins.txt"
    path.write_text("# ok\npeft>=0.21\n")
    with pytest.raises(ValueError, match=r"pins.txt:2: not `name==version"):
        fetch.pins(path)


def _wheel(folder: Path, name: str, version: str, requires: list[str] = (), size: int = 0) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
        zf.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
        if size:
            zf.writestr("pad.bin", b"\0" * size, compress_type=zipfile.ZIP_STORED)
    return path


def _pinned_folder(folder: Path) -> None:
    for name, version in fetch.pins().items():
        _wheel(folder, name, version)


def test_a_fetched_folder_as_pinned_passes(tmp_path):
    _pinned_folder(tmp_path)
    assert fetch.check(tmp_path, "3.12") == []


def test_stray_duplicate_missing_and_torch_wheels_are_each_named(tmp_path):
    _pinned_folder(tmp_path)
    (tmp_path / next(tmp_path.glob("peft-*.whl")).name).unlink()
    _wheel(tmp_path, "transformers", "5.17.0")
    _wheel(tmp_path, "torch", "2.11.0")
    _wheel(tmp_path, "datasets", "5.2.0")
    problems = "\n".join(fetch.check(tmp_path, "3.12"))
    assert "peft==0.21.2: missing" in problems
    assert "transformers: 2 wheels" in problems and "transformers is pinned at 5.24.0" in problems
    assert "torch-2.11.0-py3-none-any.whl: never carried" in problems
    assert "datasets-5.2.0-py3-none-any.whl: not pinned" in problems


def test_the_size_limit_and_unmet_needs_are_refused(tmp_path):
    _pinned_folder(tmp_path)
    next(tmp_path.glob("peft-*.whl")).unlink()
    _wheel(
        tmp_path,
        "peft",
        "0.21.2",
        ["accelerate>=9", "no-such-package", "pydantic<2", "x; extra == 'dev'"],
        4096,
    )
    problems = "\n".join(fetch.check(tmp_path, "3.12", limit=2048))
    assert "over the 0 MiB limit" in problems
    assert "needs accelerate>=9: the image has accelerate 1.15.0" in problems
    assert "needs no-such-package: neither carried nor in the image" in problems
    assert "needs pydantic<2: carried pydantic 2.14.4" in problems
    assert "needs x" not in problems  # an extra's need is not a runtime need


def test_preflight_names_a_missing_package_and_one_outside_pyprojects_range(monkeypatch):
    monkeypatch.setattr(preflight, "requirements", lambda: {"pytest": ">=999"})
    found = preflight.problems(
        {"no-such-dist-for-diffmas": "nothing", "pytest": "pytest", "packaging": "packaging"}
    )
    assert found[0].startswith("no-such-dist-for-diffmas: not installed")
    assert found[1].startswith("pytest ") and "pyproject.toml wants pytest>=999" in found[1]
    assert len(found) == 2


def test_preflight_reads_pyprojects_ranges():
    specs = preflight.requirements()
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(specs["transformers"]) == _pyproject_requirement("transformers").specifier
    assert set(preflight.NEEDED) <= set(
        specs
    )  # every package the check imports has pyproject's range checked


def _gpu_check(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_gpu_check_refuses_an_unknown_argument_and_an_empty_wheel_folder(tmp_path):
    out = _gpu_check("--gpu")
    assert out.returncode == 2 and "unknown argument --gpu" in out.stderr
    out = _gpu_check("--cpu", "--wheels", str(tmp_path))
    assert out.returncode == 2 and f"no wheels in {tmp_path}" in out.stderr


def test_gpu_check_stops_at_the_preflight_naming_what_is_missing(tmp_path):
    """A Python without the packages (the bare interpreter of a venv with nothing in it): exit 3 before any test."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    out = _gpu_check("--cpu", env_extra={"DIFFMAS_PYTHON": str(venv / "bin" / "python"), "PYTHONPATH": ""})
    assert out.returncode == 3, out.stderr
    for name in ("torch", "transformers", "pydantic", "pytest"):
        assert f"gpu_check: {name}: not installed" in out.stderr


def test_the_documented_device_command_is_the_one_ci_rehearses():
    """docs/gpu.md's command, under the device tool's 2,000 characters, is what scripts/gpu_rehearsal.sh runs (with
    --cpu and its own wheel folder): the rehearsal tests the command a GPU session will paste."""
    doc = (ROOT / "docs" / "gpu.md").read_text()
    command = next(line.strip() for line in doc.splitlines() if line.startswith("    set -o pipefail;"))
    assert len(command) < 2000 and "--wheels .whl" in command
    rehearsal = (ROOT / "scripts" / "gpu_rehearsal.sh").read_text()
    rehearsed = command.replace("gpu_check.sh --wheels .whl", "gpu_check.sh --cpu --wheels $WHL")
    assert f"'{rehearsed}'" in rehearsal
