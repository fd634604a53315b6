"""LoRA adapters for the agents: one `shared` adapter for every role, or one adapter `per_role`.

Saved in PEFT's standard format (`PeftModel.from_pretrained(base, DIR)` loads the shared adapter;
`PeftModel.from_pretrained(base, DIR/<role>, adapter_name=<role>)` each per-role one), with a
`diffmas_adapter.json` manifest and, for `realign: learned`, `realigner.safetensors` beside them.

Per-role switching goes through `RoleSwitch`, which sets each LoRA layer's active adapter directly: PEFT's own
`set_adapter` also turns `requires_grad` off for inactive adapters, which would silently cut the gradient to the
roles that wrote earlier segments of the trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from diffmas.backbones import Backbone
from diffmas.configs import LoraSpec, MethodSpec, default_of
from diffmas.methods.specs import TRAIN_METHODS
from diffmas.realign import Realigner
from diffmas.roles import PACKAGED_CHAINS
from diffmas.trace import RoleHook

REALIGNER_FILE = "realigner.safetensors"
MANIFEST_FILE = "diffmas_adapter.json"
AdapterMode = Literal["shared", "per_role"]


class RoleSwitch:
    """A trace role hook that activates the adapter of the role about to write (roles without one use `default`)."""

    def __init__(self, model, roles: list[str], default: str):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self.roles = set(roles)
        self.default = default
        self.current: str | None = None

    def __call__(self, role: str) -> None:
        name = role if role in self.roles else self.default
        if name != self.current:
            for layer in self.layers:
                layer._active_adapter = [name]
            self.current = name


def add_lora(
    backbone: Backbone, spec: LoraSpec, mode: AdapterMode, roles: list[str]
) -> tuple[Backbone, RoleHook | None]:
    """Wrap the backbone with trainable LoRA adapters; returns (backbone, role hook or None for `shared`)."""
    from peft import get_peft_model

    if mode == "shared":
        model = get_peft_model(backbone.model, spec.peft_config(), adapter_name="default")
        return Backbone(model, backbone.tokenizer, backbone.name, backbone.source), None
    model = get_peft_model(backbone.model, spec.peft_config(), adapter_name=roles[0])
    for role in roles[1:]:
        model.add_adapter(role, spec.peft_config())
    for name, p in model.named_parameters():  # every role's adapter trains jointly
        if "lora_" in name:
            p.requires_grad_(True)
    switch = RoleSwitch(model, roles, default=roles[-1])
    switch(roles[0])
    return Backbone(model, backbone.tokenizer, backbone.name, backbone.source), switch


def adapter_names(model) -> list[str]:
    return list(getattr(model, "peft_config", {}).keys())


def save_adapters(model, path: Path, manifest: dict[str, Any], realigner: Realigner | None = None) -> None:
    """Write the adapters (PEFT format), the manifest and the learned realigner into `path`.

    The base model is recorded as `base_model_identity` names it (a hub id with its commit, an embedded name with
    its sha256), in the manifest and in PEFT's `base_model_name_or_path`, which would otherwise hold the cache
    folder the weights were read from."""
    from diffmas.backbones import base_model_identity

    path.mkdir(parents=True, exist_ok=True)
    names = adapter_names(model)
    identity = base_model_identity(model)
    manifest = {**manifest, **identity}
    if manifest.get("adapters") == "per_role":
        for name in names:
            model.save_pretrained(str(path / name), selected_adapters=[name])
            nested = path / name / name  # PEFT nests non-default adapters under their name
            if nested.is_dir():
                for f in nested.iterdir():
                    f.replace(path / name / f.name)
                nested.rmdir()
    else:
        model.save_pretrained(str(path))
    if identity:
        _record_base_model(path, identity["base_model"])
    if realigner is not None and realigner.kind == "learned":
        from safetensors.torch import save_file

        save_file(
            {k: v.detach().contiguous().cpu() for k, v in realigner.state_dict().items()},
            str(path / REALIGNER_FILE),
        )
    (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")


def _record_base_model(path: Path, base_model: str) -> None:
    """Set `base_model_name_or_path` in each adapter_config.json under `path`. Rewritten after PEFT saved: PEFT
    looks the name up (a hub request for a hub id) while saving, to decide whether to save the embeddings, and
    must keep deciding that from the folder the weights were read from, as before."""
    for config_file in [path / "adapter_config.json", *path.glob("*/adapter_config.json")]:
        if config_file.is_file():
            data = json.loads(config_file.read_text(encoding="utf-8"))
            data["base_model_name_or_path"] = base_model
            config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class SolverOnly:
    """A role hook that runs the adapter only for the Solver: `single_sft`/`text_mas_sft` adapters were trained on
    the Solver reading untrained upstream agents, so the upstream agents must stay untrained at inference too."""

    def __init__(self, model, solver: str):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self.solver = solver

    def __call__(self, role: str) -> None:
        disabled = role != self.solver
        for layer in self.layers:
            layer._disable_adapters = disabled


@dataclass(frozen=True)
class ModelState:
    """What wrapping a model with LoRA changes on it besides the LoRA layers themselves: PEFT turns
    `requires_grad` off on every base weight, and training or `eval()` flips each module's mode. Recorded before
    an adapter is attached and put back after it is unloaded, so one base model serves every rung of a ladder."""

    requires_grad: dict[str, bool]
    training: dict[str, bool]

    @classmethod
    def of(cls, model) -> ModelState:
        return cls(
            {name: p.requires_grad for name, p in model.named_parameters()},
            {name: m.training for name, m in model.named_modules()},
        )

    def restore(self, model) -> None:
        for name, p in model.named_parameters():
            p.requires_grad_(self.requires_grad[name])
        for name, m in model.named_modules():
            m.training = self.training[name]


def unload_lora(model, state: ModelState):
    """Remove every LoRA layer from `model` (a PeftModel) and put `state` back on the base model it wraps, which
    is returned: the same module objects and weight tensors as before the adapters were attached."""
    from peft import PeftModel

    base = model.unload() if isinstance(model, PeftModel) else model
    state.restore(base)
    return base


def attach_adapter(
    backbone: Backbone, path: str | Path, *, in_place: bool = False
) -> tuple[Backbone, Realigner | None, RoleHook | None]:
    """Load a saved adapter directory for inference: (backbone with it, realigner it was trained with or None, hook).

    By default the given backbone is left untouched (PEFT injects LoRA layers in place, so the model is copied
    first). `in_place=True` attaches to the given model itself, for a caller that owns it for good (one copy of the
    weights); a caller that shares the model uses `adapter_attached`, which takes the adapter off again.
    """
    import copy

    if not in_place:
        backbone = Backbone(copy.deepcopy(backbone.model), backbone.tokenizer, backbone.name, backbone.source)
    return _attach(backbone, Path(path))


@contextmanager
def adapter_attached(
    backbone: Backbone, path: str | Path
) -> Iterator[tuple[Backbone, Realigner | None, RoleHook | None]]:
    """`attach_adapter` onto the backbone's own model (its weight tensors, no copy) for the duration of the block;
    on exit the adapter is unloaded and the model's parameters, `requires_grad` flags and modes are as before."""
    state = ModelState.of(backbone.model)
    attached = _attach(backbone, Path(path))
    try:
        yield attached
    finally:
        unload_lora(attached[0].model, state)


def _attach(backbone: Backbone, path: Path) -> tuple[Backbone, Realigner | None, RoleHook | None]:
    from peft import PeftModel

    manifest_path = path / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    state = ModelState.of(backbone.model)
    hook: RoleHook | None = None
    per_role = manifest.get("adapters") == "per_role"
    roles = list(manifest.get("roles", []))
    if per_role:
        missing = [r for r in roles if not (path / r / "adapter_config.json").is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: per-role adapter(s) missing: {missing}")
        model = PeftModel.from_pretrained(backbone.model, str(path / roles[0]), adapter_name=roles[0])
    else:
        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{path}: not a PEFT adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(backbone.model, str(path))
    try:
        if per_role:
            for role in roles[1:]:
                model.load_adapter(str(path / role), adapter_name=role)
            hook = RoleSwitch(model, roles, default=roles[-1])
        elif manifest.get("solver_only", _trained_solver_only(manifest.get("method"))):
            hook = SolverOnly(model, manifest["roles"][-1])
        model.eval()
        realigner = load_realigner(path, model)
        if realigner is None and manifest.get("realign") in ("norm", "ridge", "soft"):
            from diffmas.realign import build_realigner

            realigner = build_realigner(manifest["realign"], model)
    except BaseException:
        unload_lora(model, state)  # a half-loaded adapter never stays on a shared model
        raise
    return Backbone(model, backbone.tokenizer, backbone.name, f"{backbone.source} + {path}"), realigner, hook


def _trained_solver_only(method: str | None) -> bool:
    """Whether a training method's adapter runs for the Solver alone (for manifests written before they said)."""
    spec = TRAIN_METHODS.get(method or "")
    return spec is not None and spec.solver_only


def load_realigner(path: Path, model) -> Realigner | None:
    """The learned realigner saved beside an adapter, if any."""
    file = path / REALIGNER_FILE
    if not file.is_file():
        return None
    from safetensors.torch import load_file

    from diffmas.realign import build_realigner

    realigner = build_realigner("learned", model)
    realigner.load_state_dict(load_file(str(file)))
    return realigner.to(next(model.parameters()).device)


def read_manifest(adapter: str) -> dict[str, Any]:
    """An adapter's diffmas manifest ({} for a plain PEFT adapter without one)."""
    path = Path(adapter) / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# The eval settings an adapter's training fixes, with their defaults when neither manifest nor caller sets them.
ADAPTER_DEFAULTS: dict[str, Any] = {
    "method": "latent_mas", "roles": None,
    **{k: default_of(MethodSpec, k) for k in ("latent_steps", "realign", "channel", "show_prefix", "latent_layer")},
}  # fmt: skip
DONOR_METHODS = ("donor", "latent_donor")  # controls that read (part of) another item's trace
_CONTROLS_OF = {"latent_mas": DONOR_METHODS}  # controls that read an adapter with another method


def trained_settings(adapter: str) -> dict[str, Any]:
    """What `adapter` was trained with, as eval settings: the method that answers with it, the channel, (latent
    methods) latent steps and realign, and the role chain when the manifest records them."""
    manifest = read_manifest(adapter)
    out = {
        key: manifest[src]
        for key, src in (("method", "eval_method"), ("channel", "channel"))
        if src in manifest
    }
    spec = TRAIN_METHODS.get(manifest.get("method", ""))
    if spec is not None and spec.latent:
        latent = ("latent_steps", "realign", "show_prefix", "latent_layer")
        out.update({key: manifest[key] for key in latent if key in manifest})
    method_section = manifest.get("config", {}).get("method", {})
    if "roles" in method_section:  # a path as the CLI normalises one, so `./x.yaml` and `x.yaml` agree
        roles = method_section["roles"]
        out["roles"] = roles if roles is None or roles in PACKAGED_CHAINS else str(Path(roles))
    return out


def check_adapter_settings(adapter: str, trained: dict[str, Any], asked: dict[str, Any]) -> None:
    """Refuse an evaluation that asks for another setting than the adapter was trained with (naming both)."""
    for key, value in asked.items():
        if key not in trained or value == trained[key]:
            continue
        if key == "method" and value in _CONTROLS_OF.get(trained[key], ()):
            continue
        flag = "--" + key.replace("_", "-")
        raise ValueError(
            f"{adapter} was trained with {key} {trained[key]!r} but the evaluation asks for {value!r}: "
            f"pass {flag} {trained[key]} or leave {flag} out (the adapter's manifest sets it)"
        )


def resolve_adapter_settings(adapter: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The eval settings of `ADAPTER_DEFAULTS`: each one given (not None), else the adapter's manifest, else the
    default. A given one that the manifest contradicts is an error naming both values."""
    trained = trained_settings(adapter) if adapter else {}
    asked = {k: v for k, v in given.items() if v is not None}
    if adapter:
        check_adapter_settings(adapter, trained, asked)
    return {k: asked.get(k, trained.get(k, default)) for k, default in ADAPTER_DEFAULTS.items()}


def trained_method(adapter: str) -> str | None:
    """The training method an adapter's manifest names (`diffmas`, `single_sft`, ...), if it has one."""
    return read_manifest(adapter).get("method")
