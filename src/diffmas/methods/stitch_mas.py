"""`stitch_mas`: each upstream agent builds its [prompt | m latents] segment alone (no attention across agents);
the segments are then laid side by side and the Solver reads them all (paper Table 5).

Each part starts at the position where the previous part ends, so the Solver sees one contiguous position range
exactly as in `latent_mas`; the only difference is the missing cross-agent attention while writing.
"""

from __future__ import annotations

from diffmas.methods.base import LatentMessage, Method
from diffmas.methods.latent_mas import outputs_from
from diffmas.trace import LatentTrace


class StitchMAS(Method):
    name = "stitch_mas"

    def run(self, questions, format_instruction, generator=None):
        parts: list[LatentTrace] = []
        messages = []
        start_positions = None
        offset = 0
        for role in self.roles.upstream:
            part = self.new_trace(len(questions), start_positions)
            part.append_tokens(self.encode(role, questions, format_instruction), role.name)
            start = offset + part.width
            part.latent_steps(self.config.latent_steps, self.realigner, role.name)
            messages.append(LatentMessage(role.name, start, offset + part.width, self.config.latent_steps))
            offset += part.width
            start_positions = part.next_positions
            parts.append(part)
        trace = LatentTrace.concatenate(parts) if parts else self.new_trace(len(questions))
        answers = self.decode_solver(trace, questions, format_instruction, generator=generator)
        return outputs_from(trace, answers, messages)
