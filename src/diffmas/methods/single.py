"""`single`: the Solver prompt alone, decoded as text. The reference every multi-agent method is compared with."""

from __future__ import annotations

from diffmas.methods.base import Method, MethodOutput


class SingleAgent(Method):
    name = "single"

    def run(self, questions, format_instruction, generator=None):
        trace = self.new_trace(len(questions))
        answers = self.decode_solver(trace, questions, format_instruction, generator=generator)
        return [
            MethodOutput(text=a.text, answer=a, generated_tokens=len(a.token_ids), trace_len=a.trace_len)
            for a in answers
        ]
