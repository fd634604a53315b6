"""Loading backbones: a hub id, a local HF folder, a GGUF file, or an embedded name (see `diffmas.embedded`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Backbone:
    """A causal LM with its tokenizer. `name` is the spec the user gave; `source` where the weights came from."""

    model: Any  # transformers.PreTrainedModel (or a peft.PeftModel wrapping one)
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str
    source: str = ""

    @property
    def device(self):
        return next(self.model.parameters()).device
