"""A trained system in one object: `System.from_pretrained(dir)` reads an adapter directory (PEFT's format plus
our manifest) and returns the backbone with its adapters, the inference method that answers with them, the role
chain and the decoding defaults, so a user needs no flag that repeats how it was trained.

`save_pretrained(dir)` writes PEFT's format and a manifest that embeds the role templates and decoding defaults
(a roles file named at training time may be gone when the system is loaded again)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diffmas.backbones import Backbone
from diffmas.methods import Method, MethodConfig
from diffmas.roles import RoleChain

# Manifest keys written by `save_pretrained`, beside the trainer's (method, eval_method, channel, roles, ...).
ROLE_CHAIN_KEY = "role_chain"
DECODING_KEY = "decoding"
DECODING_FIELDS = (
    "max_new_tokens",
    "upstream_max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "answer_stop",
    "chat_template_kwargs",
)


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
        backbone: Backbone | None = None,
        model: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        attn_implementation: str | None = None,
        **overrides: Any,
    ) -> System:
        """Load a trained system from an adapter directory.

        The base model is the manifest's `base_model` unless `model` names another spec; either is loaded here
        (`dtype`, `device` and `attn_implementation` are `diffmas.configs.ModelSpec`'s, checked before anything
        loads) and the adapter attached to it (one copy of the weights). A `backbone` given instead is left
        untouched: the adapter is attached to a copy, since the system outlives the call. `overrides` set
        MethodConfig fields (e.g. `max_new_tokens`); the settings the adapter was trained with (method, latent steps, realign, channel)
        come from the manifest, and asking for others is an error naming both."""
        from diffmas.adapters import MANIFEST_FILE, attach_adapter
        from diffmas.evaluation import resolve_adapter_settings

        path = Path(path)
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
        settings = resolve_adapter_settings(str(path), given)
        roles = _roles(manifest, settings["roles"])
        trained, realigner, hook = attach_adapter(backbone, path, in_place=owned)
        config = MethodConfig(
            latent_steps=settings["latent_steps"],
            realign=settings["realign"],
            channel=settings["channel"],
            show_prefix=settings["show_prefix"],
            latent_layer=settings["latent_layer"],
            **{**_decoding_defaults(manifest), **overrides},
        )
        from diffmas.methods import get_method

        method = get_method(settings["method"], trained, roles, config, realigner=realigner, role_hook=hook)
        return cls(trained, method, manifest, manifest.get("format_instruction", ""))

    def generate(
        self,
        questions: Sequence[str],
        format_instruction: str | None = None,
        *,
        views: Sequence[tuple[str, ...] | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """The Solver's answer to each question (greedy unless the decoding defaults sample)."""
        fmt = self.format_instruction if format_instruction is None else format_instruction
        with torch.no_grad():
            outputs = self.method.run(list(questions), fmt, generator, views=list(views) if views else None)
        return [o.text for o in outputs]

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the adapters (PEFT format), the learned realigner if any, and a self-describing manifest."""
        from diffmas.adapters import save_adapters

        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} is not empty: save a system into a new directory")
        realigner = self.method.realigner
        save_adapters(self.backbone.model, path, self._manifest(), realigner)
        return path

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
    known = {f.name for f in dataclasses.fields(MethodConfig)}
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
