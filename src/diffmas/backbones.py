"""Loading backbones: a hub id, a local HF folder, a GGUF file, or an embedded name (see `diffmas.embedded`)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class Backbone:
    """A causal LM with its tokenizer. `name` is the spec the user gave; `source` where the weights came from."""

    model: Any  # transformers.PreTrainedModel (or a peft.PeftModel wrapping one)
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str
    source: str = ""

    def __post_init__(self) -> None:
        check_one_device(self.model)

    @property
    def device(self):
        return next(self.model.parameters()).device


def check_one_device(model: Any) -> None:
    """Refuse a model split over devices (`device_map`, CPU/disk offload) with an error that says so.

    The trace feeds embeddings to the first layer's device, the realigner maps the last layer's hidden state back
    to it, and checkpointed forwards rebuild caches per layer: none of that follows a split model's layers yet, so
    such a model would crash mid-run or compute on the wrong device (docs/distributed.md)."""
    device_map = getattr(model, "hf_device_map", None)
    if isinstance(device_map, dict) and len({str(d) for d in device_map.values()}) > 1:
        raise ValueError(
            f"the model is split over devices by device_map {sorted({str(d) for d in device_map.values()})}: "
            "diffmas runs a backbone on one device (device: cuda:N); see docs/distributed.md"
        )
    parameters = getattr(model, "parameters", None)
    devices = {str(p.device) for p in parameters()} if callable(parameters) else set()
    if len(devices) > 1 or "meta" in devices:
        raise ValueError(
            f"the model's weights lie on {sorted(devices)}: diffmas runs a backbone whose weights are all on one "
            "device (no device_map split, no offload to meta/disk); see docs/distributed.md"
        )


_DTYPES = {
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16" (or a torch.dtype) to a torch.dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16):
            return dtype
    elif str(dtype).lower() in _DTYPES:
        return getattr(torch, _DTYPES[str(dtype).lower()])
    raise ValueError(f"unknown dtype {dtype!r}: use one of float32/fp32, bfloat16/bf16, float16/fp16")


def resolve_device(device: str | torch.device) -> torch.device:
    """Map "cpu", "cuda", "cuda:N" or "auto" (cuda when available) to a torch.device; fail early without CUDA."""
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'"
            )
        return torch.device(name)
    raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'")


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and "\\" not in spec


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Batching in diffmas left-pads every segment, so a pad token and left padding are required."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad token nor an eos token to use as pad")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _model_class(src: str, local_files_only: bool = False):
    """AutoModelForCausalLM, or, for a vision-language checkpoint it refuses whose text part is a causal LM
    (Mistral3, the paper's Mistral3-8B), AutoModelForImageTextToText: the trace uses only its text decoder and
    head (the vision tower stays loaded, unused)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(src, local_files_only=local_files_only)
    if type(config) in AutoModelForCausalLM._model_mapping:
        return AutoModelForCausalLM
    if (
        getattr(config, "text_config", None) is not None
        and type(config) in AutoModelForImageTextToText._model_mapping
    ):
        return AutoModelForImageTextToText
    raise ValueError(
        f"{src}: model type {config.model_type!r} is neither a causal LM nor a vision-language model with a "
        "causal text decoder; diffmas cannot run it"
    )


def _from_pretrained(src: str, *, dtype: torch.dtype, local_files_only: bool = False) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=local_files_only)
    model_class = _model_class(src, local_files_only=local_files_only)
    return model_class.from_pretrained(src, dtype=dtype, local_files_only=local_files_only), tokenizer


class ModelUnavailable(FileNotFoundError):
    """A model spec that names nothing loadable here: no local folder or file, and the hub has no such model or
    cannot be reached. Raised after one request to the hub, before transformers' downloads would retry for tens of
    seconds, with a message of one line that names the way out."""


HUB_PROBE_TIMEOUT_S = 10.0


def _hub_problem(repo_id: str) -> str | None:
    """None when the hub serves model `repo_id`; else why not, in words. One request without retries (a model
    lookup), so a mistyped id or a machine without network is known at once."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if constants.is_offline_mode():
        return "the hub is switched off here (HF_HUB_OFFLINE=1)"
    try:
        HfApi().model_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError:
        return f"{repo_id} is gated on the hub: accept its terms there and log in (hf auth login)"
    except RepositoryNotFoundError:
        return f"the hub has no model {repo_id} (or it is private: log in with hf auth login)"
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "an error")
        return f"the hub answered {status} for {repo_id}"
    except Exception as e:  # no network: httpx's and the OS's errors come in many types
        return f"the hub cannot be reached ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None


def in_hub_cache(repo_id: str) -> bool:
    """Whether the hub cache holds a snapshot of model `repo_id` (its config.json): loadable with no network."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _from_hub(repo_id: str, local: Path, *, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load a hub model: from the hub when it answers, from the cache alone when it does not (no retries), and a
    `ModelUnavailable` of one line when neither has it."""
    from huggingface_hub import constants

    problem = _hub_problem(repo_id)
    cached = in_hub_cache(repo_id)
    where = f"no local folder or file {local.resolve()}, not in the hub cache ({constants.HF_HUB_CACHE}), and {problem}"
    if problem is not None and not cached:
        raise ModelUnavailable(
            f"cannot load model {repo_id!r}: {where}; give a local folder, an embedded name "
            "(diffmas.embedded), or download it where the hub is reachable"
        )
    try:
        return _from_pretrained(repo_id, dtype=dtype, local_files_only=problem is not None)
    except OSError as e:  # also the error a mistyped local path ends in, so name both readings
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelUnavailable(
            f"cannot load model {repo_id!r}: no local folder or file {local.resolve()}, and the hub says: {first}"
        ) from e


ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
FLASH_ATTN_MIN = "2.1"


def check_attn_implementation(name: str | None, device: torch.device, dtype: torch.dtype) -> None:
    """Fail at load, not mid-run, for an attention kernel that cannot run the trace here.

    flash-attn before 2.1 aligns the causal mask top-left, so a chunk appended to a cache (every segment after the
    first, every decoded token) would attend to the wrong columns; it also needs CUDA and half precision."""
    if name is None:
        return
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS} (or unset), got {name!r}"
        )
    if name != "flash_attention_2":
        return
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        found = version("flash_attn")
    except PackageNotFoundError:
        raise ValueError(
            "attn_implementation flash_attention_2 needs the flash-attn package (>= 2.1)"
        ) from None
    if Version(found) < Version(FLASH_ATTN_MIN):
        raise ValueError(
            f"flash-attn {found} aligns the causal mask top-left; the trace appends chunks to a cache and needs "
            f"the bottom-right alignment of flash-attn >= {FLASH_ATTN_MIN}"
        )
    if device.type != "cuda":
        raise ValueError(f"attn_implementation flash_attention_2 needs a CUDA device, got {device}")
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"attn_implementation flash_attention_2 needs bfloat16 or float16, got {dtype}")


def cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether this CPU computes `dtype` matmuls natively (AVX-512 bf16 / AMX, AVX-512 fp16); fp32 always."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def warn_if_emulated(dtype: torch.dtype, device: torch.device) -> None:
    """Half precision on a CPU without native support is emulated: slower than fp32, not faster. Say so.

    Measured with `python -m bench.dtype_check --threads 1` on an AVX2-only AMD EPYC (torch 2.13): a bf16 linear
    layer 896 -> 4864 over 300 rows ran its forward 5.5x and forward+backward 42x slower than fp32; on an AMX Xeon
    a bf16 prefill is 4.3x faster than fp32 (docs/performance.md)."""
    if device.type == "cpu" and not cpu_has_native(dtype):
        warnings.warn(
            f"{dtype} on this CPU ({torch.backends.cpu.get_cpu_capability()}, no native "
            f"{'bf16' if dtype == torch.bfloat16 else 'fp16'} matmuls) is emulated and much slower than "
            "float32; use dtype float32 here",
            stacklevel=3,
        )


def load_backbone(
    spec: str | Path = "smollm2-135m",
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    cache_dir: Path | None = None,
    attn_implementation: str | None = None,
) -> Backbone:
    """Load a causal LM + tokenizer from an embedded name, a local HF folder, a local .gguf file, or a hub id.

    Embedded names resolve first (converted once into `cache_dir`, see `diffmas.embedded`); any spec that exists on
    disk is local; `org/name` that does not exist locally goes to the hub. The model comes back in eval mode, with
    `attn_implementation` ("eager", "sdpa", "flash_attention_2"; None: transformers' default) set, and with its
    logits checked against the trace's (`diffmas.trace.check_head`): an unsupported head fails here.
    """
    from diffmas.embedded import EMBEDDED, ensure_embedded, load_gguf_dense
    from diffmas.trace import check_head

    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    check_attn_implementation(attn_implementation, torch_device, torch_dtype)
    warn_if_emulated(torch_dtype, torch_device)
    spec_str = str(spec)
    path = Path(spec_str).expanduser()
    if isinstance(spec, str) and spec in EMBEDDED:
        folder = ensure_embedded(spec, cache_dir)
        model, tokenizer = _from_pretrained(str(folder), dtype=torch_dtype)
        source = f"embedded:{folder}"
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is a folder but has no config.json: not a Hugging Face model folder"
            )
        model, tokenizer = _from_pretrained(str(path), dtype=torch_dtype)
        source = f"local:{path}"
    elif path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(
                f"{path} is a file but not a .gguf; give a HF folder, a .gguf file or an embedded name"
            )
        model, tokenizer = load_gguf_dense(path, torch_dtype)  # dequantises on every load: cache it for reuse
        source = f"gguf:{path}"
    elif isinstance(spec, str) and _looks_like_hub_id(spec_str):
        model, tokenizer = _from_hub(spec_str, path, dtype=torch_dtype)
        source = f"hub:{spec_str}"
    elif isinstance(spec, Path) or "/" in spec_str or "\\" in spec_str or path.suffix.lower() == ".gguf":
        raise FileNotFoundError(f"model path not found: {path}")
    else:
        raise ValueError(
            f"cannot load backbone {spec_str!r}: not an embedded name ({', '.join(sorted(EMBEDDED))}), "
            "not an existing local folder or .gguf file, and not a hub id of the form org/name"
        )
    model = model.to(torch_device).eval()
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    check_head(model)
    return Backbone(model=model, tokenizer=prepare_tokenizer(tokenizer), name=spec_str, source=source)


_HUB_SNAPSHOT = re.compile(
    r"models--(?P<org>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\](?P<rev>[0-9a-f]{40})"
)


def base_model_identity(model: Any) -> dict[str, str]:
    """What a saved adapter records as its base model: a name that loads it again anywhere, and a hash that pins
    its weights, never the cache folder it happened to load from.

    A hub model (by id, or a folder inside the hub cache): `org/name` and the hub's commit. An embedded model: its
    name and the sha256 of its GGUF. Another local folder: its path and a sha256 over its config and weight files
    (`diffmas.integrity`'s hashes, computed once per file version). A model built in memory: nothing."""
    config = getattr(model, "config", None)
    name_or_path = str(getattr(config, "_name_or_path", "") or "")
    commit = getattr(config, "_commit_hash", None)
    if not name_or_path:
        return {}
    match = _HUB_SNAPSHOT.search(name_or_path)
    if match:
        return {"base_model": f"{match['org']}/{match['name']}", "base_model_revision": match["rev"]}
    path = Path(name_or_path)
    if path.is_dir():
        return _local_identity(path)
    if _looks_like_hub_id(name_or_path):
        return {"base_model": name_or_path, **({"base_model_revision": commit} if commit else {})}
    return {"base_model": name_or_path}


def _local_identity(path: Path) -> dict[str, str]:
    import hashlib
    import json

    from diffmas.embedded import EMBEDDED, MANIFEST
    from diffmas.integrity import sha256_memo

    embedded = path / MANIFEST
    if embedded.is_file():
        data = json.loads(embedded.read_text(encoding="utf-8"))
        if data.get("name") in EMBEDDED and data.get("sha256"):
            return {"base_model": str(data["name"]), "base_model_sha256": str(data["sha256"])}
    files = sorted(
        p for p in path.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".gguf")
    )
    digest = hashlib.sha256("".join(f"{p.name}:{sha256_memo(p)}\n" for p in files).encode()).hexdigest()
    return {"base_model": str(path.resolve()), "base_model_sha256": digest}
