"""Configs as data: read a YAML file with errors that name it, apply `a.b.c=value` overrides from the CLI, and the
typed specs every runner's config is composed of (one definition, one set of defaults, for `diffmas eval`, `train`
and `compare`).

The single upstream text cap: `UPSTREAM_MAX_NEW_TOKENS` (256 tokens per upstream agent) is the default of
`diffmas eval`, of a comparison's `inference:` and of a training config's `method:` (what `text_mas_sft` trains on)
alike, so a trained text reader is evaluated at the budget it was trained on unless a config says otherwise."""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Dtype = Literal["float32", "bfloat16", "float16"]
# the kernels the trace runs on (checked against the device at load by `diffmas.backbones.load_backbone`)
AttnImplementation = Literal["eager", "sdpa", "flash_attention_2"]
Channel = Literal["full", "latents"]  # what later agents read of the trace (see diffmas.trace)
CHANNELS: tuple[str, ...] = typing.get_args(Channel)
# torch.compile's modes, for the static answer's step (diffmas.trace.StaticAnswer)
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")
# questions per evaluation batch, or "auto": the largest batch whose KV caches fit a budget (diffmas.memory)
BatchSize = Annotated[int, Field(ge=1)] | Literal["auto"]

DEFAULT_MODEL = "smollm2-135m"
UPSTREAM_MAX_NEW_TOKENS = 256
MAX_NEW_TOKENS = 256


class Spec(BaseModel):
    """A config section: unknown keys and wrong types are errors that name the key."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse `true`/`false` for a number: pydantic's lax mode reads `batch_size: true` as 1. (Full strict
        mode would also refuse `lr: 1e-4`, which YAML 1.1 reads as a string.)"""
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            kinds = _leaf_types(cls.model_fields[info.field_name].annotation)
            if bool not in kinds and kinds & {int, float}:
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (through unions, Optional and Annotated; a Literal gives its values'
    types)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return set().union(*(_leaf_types(a) for a in typing.get_args(annotation)))
    if origin is Literal:
        return {type(v) for v in typing.get_args(annotation)}
    return {origin or annotation}


class ModelSpec(Spec):
    """Which backbone to load and how: the arguments of `diffmas.backbones.load_backbone`."""

    name: str = DEFAULT_MODEL
    dtype: Dtype = "float32"
    device: str = "cpu"
    attn_implementation: AttnImplementation | None = None  # None: transformers' default kernel

    def load_kwargs(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "device": self.device, "attn_implementation": self.attn_implementation}


class ModelFields(Spec):
    """`ModelSpec`'s fields for the flat configs (`diffmas eval`, `diffmas compare`), whose files name the backbone
    at the top level (`model: NAME`, `dtype: ...`)."""

    model: str = DEFAULT_MODEL
    dtype: Dtype = "float32"
    device: str = "cpu"
    attn_implementation: AttnImplementation | None = None

    def model_spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.model,
            dtype=self.dtype,
            device=self.device,
            attn_implementation=self.attn_implementation,
        )


class MethodSpec(Spec):
    """How the agents communicate; shared by inference (eval, a comparison's `inference:`) and training."""

    latent_steps: int = Field(default=10, ge=0)
    realign: str = "ridge"  # one of diffmas.realign.REALIGN_KINDS
    channel: Channel = "full"
    upstream_max_new_tokens: int = Field(
        default=UPSTREAM_MAX_NEW_TOKENS, ge=1
    )  # text methods: each upstream agent
    # keyword arguments of the chat template (Qwen3's `enable_thinking`), for inference and training alike
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    # `latents` channel: readers also see other roles' item-independent prompt prefixes (see diffmas.trace)
    show_prefix: bool = False
    # the block whose hidden state a latent step feeds back (0: embeddings, -1: the final state; None: final)
    latent_layer: int | None = None

    @field_validator("realign")
    @classmethod
    def _known_realign(cls, v: str) -> str:
        from diffmas.realign import REALIGN_KINDS  # here: reading a config needs no torch

        if v not in REALIGN_KINDS:
            raise ValueError(f"unknown realign {v!r}: choose one of {REALIGN_KINDS}")
        return v


class DecodingSpec(Spec):
    """How the Solver's answer is decoded."""

    max_new_tokens: int = Field(default=MAX_NEW_TOKENS, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    samples: int = Field(default=1, ge=1)  # > 1: that many extra sampled answers per item (self-consistency)
    # how answers are computed, not what (greedy answers equal the default's): every answer on a cache of fixed
    # shape with compacted KV (diffmas.trace.StaticAnswer), and a torch.compile mode for its step (implies it)
    static_cache: bool = False
    compile: CompileMode | None = None


# DecodingSpec's fields that change how answers are computed, not what they are: left out of an evaluation's
# results key and of a saved system's decoding defaults
HOW_NOT_WHAT: frozenset[str] = frozenset({"static_cache", "compile"})


def default_of(spec: type[BaseModel], name: str) -> Any:
    """A spec field's default: the one place it is written, read by the runtime configs (`diffmas.methods.
    MethodConfig`, `diffmas.decoding.DecodeConfig`) and the CLI's flags."""
    return spec.model_fields[name].get_default(call_default_factory=True)


class InferenceSpec(MethodSpec, DecodingSpec):
    """An inference method's settings and its decoding: what `diffmas eval` and a comparison's `inference:` share."""


class LoraSpec(Spec):
    """The LoRA adapters: their PEFT settings, and one adapter shared by every role or one per role."""

    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    adapters: Literal["shared", "per_role"] = "shared"

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice; YAML loaders keep the last silently, so a setting would vanish."""

    def __init__(self, key: Any, line: int, first: int):
        super().__init__(f"duplicate key {key!r} (first on line {first})")
        self.key, self.line, self.first = key, line, first


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key repeated within one mapping (merge keys `<<` may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(key, line, seen[key])
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                break
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str | Path) -> Any:
    """YAML from `text` by a safe loader that refuses duplicate keys, naming `source`, the line and the key."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKeyError as e:
        raise ValueError(f"{source}:{e.line}: duplicate key {e.key!r} (first on line {e.first})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: invalid YAML ({e})") from e


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = load_yaml(path.read_text(encoding="utf-8"), path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], *layers: dict[str, Any]) -> dict[str, Any]:
    """`base` with each layer's keys laid over it in turn; sections (dicts) merge key by key, values replace."""
    out = copy.deepcopy(base)
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `dotted.key=value` applied, in order. OmegaConf parses each one (its dotlist
    grammar: YAML values, `3`, `true`, `1e-4`, `[0, 2]`, `{agents: 2}`); a value replaces what the key held (a
    mapping is not merged into the section it replaces). Errors are one line naming the override."""
    out = copy.deepcopy(data)
    for item in overrides:
        parts, value = _parse_override(item)
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
        _refuse_glued_keys(item, ".".join(parts), value)
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    """An override's key path and value, by OmegaConf's `from_dotlist`; no interpolation (`${x}` stays text)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {item!r} has an empty key part")
    try:
        parsed: Any = OmegaConf.to_container(OmegaConf.from_dotlist([f"{key.strip()}={raw}"]), resolve=False)
        for part in parts:
            parsed = parsed[part]
    except yaml.YAMLError as e:
        raise ValueError(f"override {item!r}: value is not valid YAML ({_one_line(e)})") from None
    except (
        OmegaConfBaseException,
        KeyError,
        TypeError,
    ) as e:  # a key OmegaConf reads otherwise (`a[0]`, `a\.b`)
        raise ValueError(f"override {item!r}: cannot read it as dotted.key=value ({_one_line(e)})") from None
    return parts, parsed


def _one_line(error: Exception) -> str:
    """A library error's message on one line (YAML's name the problem and its context on lines of their own)."""
    if isinstance(error, yaml.MarkedYAMLError):
        text = "; ".join(str(x) for x in (error.context, error.problem) if x)
    else:
        text = str(error)
    return " ".join(text.split())


def _refuse_glued_keys(item: str, key: str, value: Any) -> None:
    """YAML reads `{agents:2}` (no space after the colon) as one key `agents:2` with no value, which then reaches
    the code as a bogus keyword argument. Refuse it, naming both ways to write what was meant."""
    if not isinstance(value, dict):
        return
    for k, v in value.items():
        if isinstance(k, str) and v is None and ":" in k and not k.startswith(":"):
            name, _, val = k.partition(":")
            raise ValueError(
                f"override {item!r}: YAML reads {k!r} as one key with no value; write {{{name}: {val}}} "
                f"(a space after the colon) or {key}.{name}={val}"
            )
        _refuse_glued_keys(item, f"{key}.{k}", v)
