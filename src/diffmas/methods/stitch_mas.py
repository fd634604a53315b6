"""`stitch_mas`: each upstream agent builds its [prompt | m latents] segment alone (no attention across agents);
the segments are then laid side by side and the Solver reads them all (paper Table 5).

Each part starts at the position where the previous part ends, so the Solver sees one contiguous position range
exactly as in `latent_mas`; the only difference is the missing cross-agent attention while writing.
"""

from __future__ import annotations

from collections.abc import Sequence

from diffmas.methods.base import LatentMessage, Method, Views
from diffmas.trace import LatentTrace


def build_stitched_trace(
    method: Method,
    questions: Sequence[str],
    fmt: str,
    *,
    views: Views = None,
    grad_last: int | None = None,
) -> tuple[LatentTrace, list[LatentMessage]]:
    """Each upstream role's [prompt | m latents] built in its own trace, then laid side by side."""
    parts: list[LatentTrace] = []
    messages = []
    start_positions = None
    offset = 0
    for role in method.roles.upstream:
        part = method.new_trace(len(questions), start_positions)
        part.append_tokens(method.encode(role, questions, fmt, views=views), role.name)
        start = offset + part.width
        part.latent_steps(method.config.latent_steps, method.realigner, role.name, grad_last=grad_last)
        messages.append(LatentMessage(role.name, start, offset + part.width, method.config.latent_steps))
        offset += part.width
        start_positions = part.next_positions
        parts.append(part)
    trace = LatentTrace.concatenate(parts) if parts else method.new_trace(len(questions))
    return trace, messages


class StitchMAS(Method):
    name = "stitch_mas"
    takes_latents = True

    def build_trace(self, questions, fmt, views=None, *, grad_last=None):
        return build_stitched_trace(self, questions, fmt, views=views, grad_last=grad_last)

    def trace_columns(self, questions, fmt, views=None) -> int:
        from diffmas.methods.latent_mas import latent_trace_columns

        return latent_trace_columns(self, questions, fmt, views)
