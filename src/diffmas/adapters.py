"""Plugging trained adapters into a backbone for inference: PEFT LoRA in its standard format, plus the optional
learned realigner saved beside it (`realigner.safetensors`)."""

from __future__ import annotations

from pathlib import Path

from diffmas.backbones import Backbone
from diffmas.realign import Realigner
from diffmas.trace import RoleHook

REALIGNER_FILE = "realigner.safetensors"


def attach_adapter(
    backbone: Backbone, path: str | Path
) -> tuple[Backbone, Realigner | None, RoleHook | None]:
    """Load a LoRA adapter directory onto `backbone`. Returns (backbone with adapter, realigner or None, role hook)."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path}: not a PEFT adapter directory (no adapter_config.json)")
    model = PeftModel.from_pretrained(backbone.model, str(path))
    model.eval()
    realigner = load_realigner(path, model)
    return Backbone(model, backbone.tokenizer, backbone.name, f"{backbone.source} + {path}"), realigner, None


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
