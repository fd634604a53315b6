"""diffmas: multi-agent LLMs that communicate through a shared KV cache, trained end to end with LoRA.

The public names are importable from here; each loads its module on first use, so `import diffmas` (and the
CLI's `--help`) stays fast and torch is imported only when a name that needs it is used."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("diffmas")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0+unknown"

# public name -> the module that defines it
_EXPORTS = {
    "System": "diffmas.system",
    "load_backbone": "diffmas.backbones",
    "Backbone": "diffmas.backbones",
    "get_method": "diffmas.methods",
    "MethodConfig": "diffmas.methods",
    "RoleChain": "diffmas.roles",
    "DiffMASTrainer": "diffmas.training",
    "TrainConfig": "diffmas.training",
    "get_task": "diffmas.tasks",
    "Item": "diffmas.items",
    "grade": "diffmas.grading",
    "EvalConfig": "diffmas.evaluation",
    "run_eval": "diffmas.evaluation",
}

__all__ = [
    "Backbone",
    "DiffMASTrainer",
    "EvalConfig",
    "Item",
    "MethodConfig",
    "RoleChain",
    "System",
    "TrainConfig",
    "__version__",
    "get_method",
    "get_task",
    "grade",
    "load_backbone",
    "run_eval",
]

if TYPE_CHECKING:
    from diffmas.backbones import Backbone, load_backbone
    from diffmas.evaluation import EvalConfig, run_eval
    from diffmas.grading import grade
    from diffmas.items import Item
    from diffmas.methods import MethodConfig, get_method
    from diffmas.roles import RoleChain
    from diffmas.system import System
    from diffmas.tasks import get_task
    from diffmas.training import DiffMASTrainer, TrainConfig


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffmas' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
