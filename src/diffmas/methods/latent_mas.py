"""`latent_mas`: upstream agents write m latent steps each into one shared trace; the Solver decodes from it.

Training-free with the default `ridge` realign (LatentMAS). With trained adapters plugged into the backbone this is
also how a DiffMAS model answers. `build_latent_trace` is shared with training, which runs it with grad.
"""

from __future__ import annotations

from collections.abc import Sequence

from diffmas.methods.base import LatentMessage, Method, MethodOutput
from diffmas.trace import LatentTrace


def build_latent_trace(
    method: Method, questions: Sequence[str], fmt: str, *, grad_last: int | None = None
) -> tuple[LatentTrace, list[LatentMessage]]:
    """[role prompt | m latents] for every upstream role, in one trace. With 0 steps the prompts still go in.

    `grad_last=k` keeps only the last k latent steps of each agent in the autograd graph (training)."""
    trace = method.new_trace(len(questions))
    messages = []
    for role in method.roles.upstream:
        trace.append_tokens(method.encode(role, questions, fmt), role.name)
        start = trace.width
        trace.latent_steps(method.config.latent_steps, method.realigner, role.name, grad_last=grad_last)
        messages.append(LatentMessage(role.name, start, trace.width, method.config.latent_steps))
    return trace, messages


def outputs_from(answers, messages) -> list[MethodOutput]:
    return [
        MethodOutput(
            text=a.text,
            answer=a,
            messages=list(messages),
            generated_tokens=len(a.token_ids),
            trace_len=a.trace_len,
        )
        for a in answers
    ]


class LatentMAS(Method):
    name = "latent_mas"

    def run(self, questions, format_instruction, generator=None):
        trace, messages = build_latent_trace(self, questions, format_instruction)
        answers = self.decode_solver(trace, questions, format_instruction, generator=generator)
        return outputs_from(answers, messages)


class NoCommControl(LatentMAS):
    """`no_comm`: the latent chain with every upstream agent removed, so the Solver reads an empty trace.

    It must equal `single` exactly; if it does not, the chain machinery leaks something into the Solver."""

    name = "no_comm"

    def __init__(self, backbone, roles=None, config=None, **kwargs):
        super().__init__(backbone, roles, config, **kwargs)
        self.roles = self.roles.solver_only()
