"""A trained system in one object: `System.from_pretrained(dir or hub id)` reads an adapter directory (PEFT's
format plus our manifest) and returns the backbone with its adapters, the inference method that answers with them,
the role chain and the decoding defaults, so a user needs no flag that repeats how it was trained.

`save_pretrained(dir)` writes PEFT's format and a manifest that embeds the role templates and decoding defaults
(a roles file named at training time may be gone when the system is loaded again); `push_to_hub(repo_id)` uploads
the same folder. `generate` takes the generation arguments of transformers' `generate`."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from diffmas.backbones import Backbone
from diffmas.configs import HOW_NOT_WHAT, DecodingSpec
from diffmas.methods import Method, MethodConfig
from diffmas.roles import RoleChain

# Manifest keys written by `save_pretrained`, beside the trainer's (method, eval_method, channel, roles, ...).
ROLE_CHAIN_KEY = "role_chain"
DECODING_KEY = "decoding"
# (what answers are: `DecodingSpec`'s fields but those of HOW_NOT_WHAT, the text budget, answer stop and template)
DECODING_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(MethodConfig)
    if f.name in set(DecodingSpec.model_fields) - HOW_NOT_WHAT
    or f.name in {"upstream_max_new_tokens", "answer_stop", "chat_template_kwargs"}
)
# What `generate` takes, as transformers' `generate` names it (`do_sample` maps onto our temperature).
GENERATION_ARGS = (
    "max_new_tokens", "upstream_max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "stop_strings",
)  # fmt: skip
_METHOD_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(MethodConfig))
KEPT_IF_PRESENT = ("README.md",)  # a model card the user wrote is not replaced by PEFT's template
TRANSFORMERS_TEMPERATURE = 1.0  # transformers' default when sampling is asked for without a temperature


@dataclasses.dataclass
class System:
    """A ready multi-agent system: `generate(questions)` answers them."""

    backbone: Backbone
    method: Method
    manifest: dict[str, Any]
    format_instruction: str = ""

    @property
    def roles(self) -> RoleChain:
        return self.method.chain

    @property
    def config(self) -> MethodConfig:
        return self.method.config

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        backbone: Backbone | None = None,
        model: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        attn_implementation: str | None = None,
        **overrides: Any,
    ) -> System:
        """Load a trained system from an adapter directory, or a hub repo id holding one (`revision`, `token` and
        `cache_dir` are the hub's; a repo in the hub cache loads with the hub off, HF_HUB_OFFLINE=1).

        The base model is the manifest's `base_model` unless `model` names another spec; either is loaded here
        (`dtype`, `device` and `attn_implementation` are `diffmas.configs.ModelSpec`'s, checked before anything
        loads) and the adapter attached to it (one copy of the weights). A `backbone` given instead is left
        untouched: the adapter is attached to a copy, since the system outlives the call. `overrides` set
        MethodConfig fields (e.g. `max_new_tokens`); the settings the adapter was trained with (method, latent steps, realign, channel)
        come from the manifest, and asking for others is an error naming both."""
        from diffmas.adapters import MANIFEST_FILE, attach_adapter, resolve_adapter_settings

        path = resolve_system_path(path, revision=revision, token=token, cache_dir=cache_dir)
        manifest_file = path / MANIFEST_FILE
        if not manifest_file.is_file():
            raise FileNotFoundError(f"{path}: no {MANIFEST_FILE} (not a diffmas adapter directory)")
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        owned = backbone is None
        if backbone is None:
            from diffmas.backbones import load_backbone
            from diffmas.configs import ModelSpec

            spec = ModelSpec.model_validate(
                {"name": model or manifest["base_model"], "dtype": dtype, "device": device,
                 "attn_implementation": attn_implementation}
            )  # fmt: skip
            backbone = load_backbone(spec.name, **spec.load_kwargs())
        given = {k: overrides.pop(k, None) for k in ("method", "latent_steps", "realign", "channel")}
        if (
            "method" not in manifest
        ):  # saved from a system built by hand (no training method): its own settings
            given.update(
                {k: manifest[k] for k in ("latent_steps", "realign") if given[k] is None and k in manifest}
            )
        settings = resolve_adapter_settings(str(path), given)
        roles = _roles(manifest, settings["roles"])
        trained, realigner, hook = attach_adapter(backbone, path, in_place=owned)
        trained_with = {k: v for k, v in settings.items() if k in _METHOD_CONFIG_FIELDS}  # not method, roles
        config = MethodConfig(**trained_with, **{**_decoding_defaults(manifest), **overrides})
        from diffmas.methods import get_method

        method = get_method(settings["method"], trained, roles, config, realigner=realigner, role_hook=hook)
        return cls(trained, method, manifest, manifest.get("format_instruction", ""))

    def generate(
        self,
        questions: str | Sequence[str],
        format_instruction: str | None = None,
        *,
        views: Sequence[tuple[str, ...] | None] | None = None,
        generator: torch.Generator | None = None,
        generation_config: Any = None,
        **generation_kwargs: Any,
    ) -> Any:
        """The Solver's answer to each question (one string for one question given as a string).

        Generation arguments are transformers' names (`max_new_tokens`, `do_sample`, `temperature`, `top_p`,
        `top_k`, `stop_strings`, and `upstream_max_new_tokens` for text methods), as keywords or in a `generation_config`
        (a `transformers.GenerationConfig`, whose values other than its defaults count, or a mapping); keywords
        win. They hold for this call only; unset ones keep the system's decoding defaults. `do_sample=False` is
        greedy; `do_sample=True` samples, at temperature 1.0 unless one is given or the system samples already;
        without `do_sample`, a temperature above 0 samples, as in `diffmas eval`."""
        batch = [questions] if isinstance(questions, str) else list(questions)
        fmt = self.format_instruction if format_instruction is None else format_instruction
        config = self._decoding(generation_config, generation_kwargs)
        kept, self.method.config = self.method.config, config
        try:
            with torch.no_grad():
                outputs = self.method.run(batch, fmt, generator, views=list(views) if views else None)
        finally:
            self.method.config = kept
        texts = [o.text for o in outputs]
        return texts[0] if isinstance(questions, str) else texts

    def _decoding(self, generation_config: Any, kwargs: Mapping[str, Any]) -> MethodConfig:
        """The method's config with this call's generation arguments; unknown names are a TypeError naming the
        accepted ones (transformers refuses unused ones too)."""
        unknown = sorted(set(kwargs) - set(GENERATION_ARGS))
        if unknown:
            raise TypeError(
                f"System.generate got unknown generation argument(s) {', '.join(unknown)}; "
                f"it takes {', '.join(GENERATION_ARGS)} and generation_config"
            )
        asked: dict[str, Any] = {}
        if generation_config is not None:
            given = (
                generation_config.to_diff_dict()
                if hasattr(generation_config, "to_diff_dict")
                else dict(generation_config)
            )
            asked.update({k: given[k] for k in GENERATION_ARGS if given.get(k) is not None})
        asked.update({k: v for k, v in kwargs.items() if v is not None})
        stops = asked.pop("stop_strings", None)
        if stops:  # as transformers: the answer ends at (and keeps) the first of them
            stops = [stops] if isinstance(stops, str) else list(stops)
            asked["answer_stop"] = "|".join(re.escape(s) for s in stops)
        do_sample = asked.pop("do_sample", None)
        if do_sample is False:
            asked["temperature"] = 0.0
        elif do_sample and asked.get("temperature", self.config.temperature) == 0:
            asked["temperature"] = TRANSFORMERS_TEMPERATURE
        return dataclasses.replace(self.config, **asked)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the adapters (PEFT format), the learned realigner if any, and a self-describing manifest.

        Into a new directory or an existing one, as transformers does: the files of an earlier save there are
        replaced (a per-role adapter of it that this system lacks is removed), other files are left, a model card
        (README.md, which PEFT writes) included. The new files
        are written beside it first, so a failed save leaves the earlier one whole."""
        from diffmas.adapters import save_adapters

        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} is a file: save_pretrained writes a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            save_adapters(self.backbone.model, staging, self._manifest(), self.method.realigner)
            path.mkdir(exist_ok=True)
            _remove_saved_system(path)
            for entry in staging.iterdir():
                if entry.name in KEPT_IF_PRESENT and (path / entry.name).exists():
                    continue
                entry.replace(path / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return path

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        commit_message: str = "Upload diffmas system",
    ) -> Any:
        """Upload the system as `save_pretrained` writes it, with a model card, to hub repo `repo_id` (created if
        missing); `System.from_pretrained(repo_id)` loads it back. Returns the hub's commit info."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="diffmas-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "system")
            (folder / "README.md").write_text(self.model_card(repo_id), encoding="utf-8")
            api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, revision=revision
            )

    def model_card(self, repo_id: str) -> str:
        """A short model card: PEFT's library tag, the base model when it is a hub id, and how to load the system."""
        manifest = self._manifest()
        base = str(manifest.get("base_model", ""))
        meta = ["library_name: peft", "tags:", "- diffmas", "- lora"]
        if _is_hub_id(base):
            meta.append(f"base_model: {base}")
        revision = manifest.get("base_model_revision") or manifest.get("base_model_sha256")
        pinned = f" ({revision})" if revision else ""
        return (
            "---\n" + "\n".join(meta) + "\n---\n\n"
            f"# {repo_id}\n\nA DiffMAS multi-agent system ({self.method.name}, roles "
            f"{', '.join(r.name for r in self.roles.roles)}) on {base or 'its base model'}{pinned}.\n\n"
            f"```python\nimport diffmas\n\nsystem = diffmas.System.from_pretrained({repo_id!r})\n"
            'print(system.generate("What is 12 + 30?", max_new_tokens=64))\n```\n'
        )

    def _manifest(self) -> dict[str, Any]:
        config = self.config
        return {
            **self.manifest,
            "eval_method": self.method.name,
            "channel": config.channel,
            "latent_steps": config.latent_steps,
            "realign": config.realign,
            "roles": [r.name for r in self.roles.roles],
            ROLE_CHAIN_KEY: self.roles.to_mapping(),
            DECODING_KEY: {k: getattr(config, k) for k in DECODING_FIELDS if hasattr(config, k)},
            "format_instruction": self.format_instruction,
        }


def _roles(manifest: dict[str, Any], spec: str | None) -> RoleChain:
    """The embedded chain when the manifest has one (written by `save_pretrained`), else the trainer's roles spec
    (a packaged name or a path) as recorded in its config."""
    embedded = manifest.get(ROLE_CHAIN_KEY)
    if embedded is not None:
        return RoleChain.from_mapping(embedded, source=f"{ROLE_CHAIN_KEY} of the manifest")
    return RoleChain.load(spec)


def _decoding_defaults(manifest: dict[str, Any]) -> dict[str, Any]:
    """Decoding defaults: those saved by `save_pretrained`, else the trainer's evaluation budgets."""
    known = _METHOD_CONFIG_FIELDS
    if DECODING_KEY in manifest:
        return {k: v for k, v in manifest[DECODING_KEY].items() if k in known}
    method = manifest.get("config", {}).get("method", {})
    out = {}
    if "eval_max_new_tokens" in method:
        out["max_new_tokens"] = method["eval_max_new_tokens"]
    if "upstream_max_new_tokens" in method:
        out["upstream_max_new_tokens"] = method["upstream_max_new_tokens"]
    if method.get("chat_template_kwargs") and "chat_template_kwargs" in known:
        out["chat_template_kwargs"] = method["chat_template_kwargs"]
    return out


def _is_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~", "/")) and "\\" not in spec


def resolve_system_path(
    path: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """A local adapter directory as it is; a hub repo id downloaded (or found in the hub cache) as a snapshot.
    Anything else is a FileNotFoundError of one line naming both readings."""
    local = Path(path).expanduser()
    if local.is_dir() or not _is_hub_id(str(path)):
        return local
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            str(path), revision=revision, token=token, cache_dir=cache_dir, repo_type="model"
        )
    except Exception as e:  # not found, gated, offline without a cached copy
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FileNotFoundError(
            f"{path}: no local adapter directory {local.resolve()}, and the hub gave no system "
            f"({type(e).__name__}: {reason})"
        ) from e
    return Path(folder)


def _remove_saved_system(path: Path) -> None:
    """Remove what an earlier `save_pretrained` wrote into `path` (its adapter files, per-role folders, realigner
    and manifest); files it did not write stay."""
    from diffmas.adapters import MANIFEST_FILE, REALIGNER_FILE

    old: dict[str, Any] = {}
    if (path / MANIFEST_FILE).is_file():
        try:
            old = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        except ValueError:
            old = {}
    for name in old.get("roles", []) if old.get("adapters") == "per_role" else []:
        role_dir = path / str(name)
        if (role_dir / "adapter_config.json").is_file():
            shutil.rmtree(role_dir)
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", REALIGNER_FILE):
        (path / name).unlink(missing_ok=True)
    (path / MANIFEST_FILE).unlink(missing_ok=True)
