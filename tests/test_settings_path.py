"""One path for settings: defaults written once (`diffmas.configs`), one constructor from a config section to the
runtime config (`MethodConfig.from_spec`), keyword-only runtime configs, one channel type, and the results key and
manifest fields of runs written before the change unchanged."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from diffmas import configs
from diffmas.configs import CHANNELS, DecodingSpec, InferenceSpec, MethodSpec, default_of
from diffmas.decoding import DecodeConfig
from diffmas.evaluation import ADAPTER_DEFAULTS, EvalConfig
from diffmas.methods import MethodConfig
from diffmas.training.config import MethodSection

# What `EvalConfig(task="arith").results_key()` was before the settings had one path (a run directory written then
# must still resume).
OLD_DEFAULT_KEY = {
    "max_new_tokens": 256, "temperature": 0.0, "top_p": 0.95, "samples": 1, "latent_steps": 10, "realign": "ridge",
    "upstream_max_new_tokens": 256, "model": "smollm2-135m", "dtype": "float32", "method": "latent_mas",
    "task": "arith", "task_args": {}, "split": "test", "seed": 0, "adapter": None, "roles": None,
}  # fmt: skip
OLD_SET_KEY = {
    **OLD_DEFAULT_KEY, "temperature": 0.7, "top_k": 20, "samples": 3, "channel": "latents",
    "chat_template_kwargs": {"enable_thinking": True}, "show_prefix": True, "latent_layer": 3,
    "sampled_on_static_cache": True, "sampled_longest_first": True,
}  # fmt: skip


def test_the_results_key_of_a_run_written_before_is_unchanged():
    assert EvalConfig(task="arith").results_key() == OLD_DEFAULT_KEY
    changed = EvalConfig(
        task="arith", channel="latents", top_k=20, show_prefix=True, latent_layer=3, temperature=0.7,
        chat_template_kwargs={"enable_thinking": True}, static_cache=True, samples=3, batch_size=2,
    )  # fmt: skip
    assert changed.results_key() == OLD_SET_KEY


def _runtime_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("runtime", [MethodConfig, DecodeConfig])
def test_runtime_defaults_are_the_specs(runtime: type) -> None:
    """Every runtime field that a spec also declares has the spec's default (written once, in configs.py)."""
    checked = 0
    for name, field in _runtime_fields(runtime).items():
        for spec in (MethodSpec, DecodingSpec):
            if name in spec.model_fields:
                default = (
                    field.default_factory()
                    if field.default_factory is not dataclasses.MISSING
                    else field.default
                )
                assert default == default_of(spec, name), (runtime.__name__, name)
                checked += 1
    assert checked >= (10 if runtime is MethodConfig else 6)


@pytest.mark.parametrize("runtime", [MethodConfig, DecodeConfig])
def test_runtime_configs_are_keyword_only(runtime: type) -> None:
    with pytest.raises(TypeError):
        runtime(12)


def _non_default(spec: type, name: str) -> typing.Any:
    """A valid value other than the field's default."""
    values = {
        "latent_steps": 3, "realign": "norm", "channel": "latents", "upstream_max_new_tokens": 17,
        "chat_template_kwargs": {"enable_thinking": True}, "show_prefix": True, "latent_layer": 2,
        "max_new_tokens": 19, "temperature": 0.5, "top_p": 0.5, "top_k": 7, "samples": 2, "static_cache": True,
        "compile": "default",
    }  # fmt: skip
    value = values[name]
    assert value != default_of(spec, name)
    return value


def test_from_spec_carries_every_field_a_spec_shares_with_the_runtime_config():
    """Set every shared field off its default in an `EvalConfig`: each arrives in the `MethodConfig` and, for the
    decoding ones, in both `DecodeConfig`s (a new knob declared in the spec and the runtime travels unaided)."""
    shared = sorted(set(InferenceSpec.model_fields) & set(_runtime_fields(MethodConfig)))
    assert {"top_p", "top_k", "channel", "static_cache", "compile", "latent_layer"} <= set(shared)
    cfg = EvalConfig(task="arith", seed=5, **{k: _non_default(InferenceSpec, k) for k in shared})
    mc = cfg.method_config(answer_stop="STOP")
    for name in shared:
        assert getattr(mc, name) == getattr(cfg, name), name
    assert mc.seed == 5 and mc.answer_stop == "STOP"
    assert cfg.method_config(temperature=0.6).temperature == 0.6
    for name in set(_runtime_fields(DecodeConfig)) & set(shared) - {"max_new_tokens"}:
        assert getattr(mc.solver_decoding, name) == getattr(cfg, name) == getattr(mc.upstream_decoding, name)
    assert mc.solver_decoding.max_new_tokens == 19 and mc.upstream_decoding.max_new_tokens == 17
    assert mc.upstream_decoding.stop_pattern is None and "STOP" in (mc.solver_decoding.stop_pattern or "")


def test_from_spec_of_a_training_section_takes_its_method_fields_only():
    section = MethodSection(latent_steps=4, channel="latents", realign="learned", eval_max_new_tokens=33)
    mc = MethodConfig.from_spec(section, max_new_tokens=section.eval_max_new_tokens)
    assert (mc.latent_steps, mc.channel, mc.realign, mc.max_new_tokens) == (4, "latents", "learned", 33)
    assert mc.top_p == default_of(DecodingSpec, "top_p")  # not a training field: the one default
    with pytest.raises(TypeError):
        MethodConfig.from_spec(section, not_a_knob=1)


def test_one_channel_type():
    assert CHANNELS == ("full", "latents") == typing.get_args(configs.Channel)
    assert typing.get_type_hints(MethodConfig)["channel"] == configs.Channel
    assert ADAPTER_DEFAULTS["channel"] == default_of(MethodSpec, "channel")
    with pytest.raises(ValueError, match="channel must be one of"):
        MethodConfig(channel="none")  # type: ignore[arg-type]


def test_a_saved_systems_decoding_fields_are_unchanged():
    from diffmas.system import DECODING_FIELDS

    old = {"max_new_tokens", "upstream_max_new_tokens", "temperature", "top_p", "top_k", "answer_stop"}
    assert set(DECODING_FIELDS) == old | {"chat_template_kwargs"}
