"""Inference methods behind one contract (`Method.run`). `get_method(name, backbone, ...)` builds one by name."""

from __future__ import annotations

from diffmas.methods.base import AgentMessage, LatentMessage, Method, MethodConfig, MethodOutput
from diffmas.methods.latent_mas import (
    DonorControl,
    LatentDonor,
    LatentMAS,
    NoCommControl,
    SingleLatent,
    build_latent_trace,
    derangement,
)
from diffmas.methods.single import SingleAgent
from diffmas.methods.stitch_mas import StitchMAS, build_stitched_trace
from diffmas.methods.text_mas import TextMAS

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        SingleAgent,
        TextMAS,
        LatentMAS,
        StitchMAS,
        NoCommControl,
        DonorControl,
        LatentDonor,
        SingleLatent,
    )
}


def get_method(name: str, backbone, roles=None, config: MethodConfig | None = None, **kwargs) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {sorted(METHODS)}")
    return METHODS[name](backbone, roles, config, **kwargs)


__all__ = [
    "METHODS",
    "AgentMessage",
    "DonorControl",
    "LatentDonor",
    "LatentMAS",
    "LatentMessage",
    "Method",
    "MethodConfig",
    "MethodOutput",
    "NoCommControl",
    "SingleAgent",
    "SingleLatent",
    "StitchMAS",
    "TextMAS",
    "build_latent_trace",
    "build_stitched_trace",
    "derangement",
    "get_method",
]
