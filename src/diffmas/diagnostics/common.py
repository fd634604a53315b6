"""What every diagnostic needs: a backbone by name (`tiny` is the in-process model), a task with its agents, the
role chain that fits them, and a `latent_mas` method over them (optionally with a trained adapter attached)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from diffmas.backbones import Backbone
from diffmas.methods import Method, MethodConfig, get_method
from diffmas.roles import RoleChain
from diffmas.tasks import Task, get_task
from diffmas.tasks.base import Item

TINY = "tiny"


def load_model(name: str, attn_implementation: str | None = None, device: str = "cpu") -> Backbone:
    """`tiny`: the in-process tiny Llama of `diffmas.testing` (no download); else `load_backbone(name)`."""
    if name == TINY:
        from diffmas.testing import tiny_backbone

        backbone = tiny_backbone("llama")
        if attn_implementation is not None:
            backbone.model.set_attn_implementation(attn_implementation)
        return backbone
    from diffmas.backbones import load_backbone

    return load_backbone(name, device=device, attn_implementation=attn_implementation)


PACKAGED_CHAINS = {2: "comm2", 3: "comm3", 4: "comm"}  # the communication chains by number of agents


def task_args(name: str, agents: int) -> dict[str, int]:
    """`{"agents": agents}` for a task that takes the number of agents (the communication tasks), else nothing."""
    from diffmas.tasks.registry import registered_tasks

    factory = registered_tasks().get(name)
    takes = factory is not None and "agents" in inspect.signature(factory).parameters
    return {"agents": agents} if takes else {}


def load_task(name: str, agents: int) -> Task:
    """The task, told how many agents the chain has when it takes the argument."""
    return get_task(name, **task_args(name, agents))


def chain_name(agents: int, roles: str | None = None) -> str:
    """`roles` if given, else the packaged communication chain with `agents` agents."""
    if roles is not None:
        return roles
    if agents not in PACKAGED_CHAINS:
        raise ValueError(f"no packaged role chain has {agents} agents (2, 3 or 4): pass --roles")
    return PACKAGED_CHAINS[agents]


def chain_for(agents: int, roles: str | None = None) -> RoleChain:
    return RoleChain.load(chain_name(agents, roles))


@dataclass(frozen=True)
class Setting:
    """The channel under study (what `diffmas diagnose` passes on from its options)."""

    channel: str = "latents"
    latent_steps: int = 2
    realign: str = "ridge"
    max_new_tokens: int = 14
    seed: int = 0

    def check(self) -> None:
        """Raise the one-line error `MethodConfig` gives for a bad channel, realign or step count."""
        MethodConfig(
            latent_steps=self.latent_steps,
            realign=self.realign,
            channel=self.channel,  # type: ignore[arg-type]
        )


def make_method(
    backbone: Backbone, roles: RoleChain, task: Task, setting: Setting, *, realigner=None, role_hook=None
) -> Method:
    """A `latent_mas` method in `setting`'s channel, answering in `task`'s format."""
    config = MethodConfig(
        latent_steps=setting.latent_steps,
        realign=setting.realign,
        max_new_tokens=setting.max_new_tokens,
        channel=setting.channel,  # type: ignore[arg-type]
        answer_stop=task.answer_stop,
        seed=setting.seed,
    )
    return get_method("latent_mas", backbone, roles, config, realigner=realigner, role_hook=role_hook)


@contextmanager
def method_with(
    backbone: Backbone, roles: RoleChain, task: Task, setting: Setting, adapter: str | Path | None = None
) -> Iterator[Method]:
    """`make_method` on the base model, or with the adapter directory `adapter` attached for the block (its
    realigner and per-role hook included; the base model is as before afterwards)."""
    if adapter is None:
        yield make_method(backbone, roles, task, setting)
        return
    from diffmas.adapters import adapter_attached

    with adapter_attached(backbone, adapter) as (attached, realigner, hook):
        yield make_method(attached, roles, task, setting, realigner=realigner, role_hook=hook)


def questions_of(task: Task, items: Sequence[Item]) -> tuple[list[str], list | None]:
    """Rendered questions and views, as evaluation hands them to a method."""
    from diffmas.evaluation import views_of

    return [task.render_question(it) for it in items], views_of(list(items))


def chance(task: Task, items: Sequence[Item]) -> float | None:
    """The uniform-guess rate over each item's options (None for an open answer set)."""
    return task.chance_rate(list(items))


def batches(items: Sequence[Item], size: int) -> list[list[Item]]:
    return [list(items[b : b + size]) for b in range(0, len(items), size)]
