"""`text_mas`: the same roles, but each upstream agent generates text that every later agent reads in its prompt."""

from __future__ import annotations

from diffmas.decoding import decode
from diffmas.methods.base import Method, MethodOutput
from diffmas.roles import TextMessage, format_context


class TextMAS(Method):
    name = "text_mas"

    def upstream(
        self, questions, format_instruction, generator=None, views=None
    ) -> tuple[list[list[TextMessage]], list[int]]:
        """What each upstream agent says, in order, per question; and the tokens they generated."""
        batch = len(questions)
        said: list[list[TextMessage]] = [[] for _ in range(batch)]
        upstream_tokens = [0] * batch
        for role in self.roles.upstream:
            contexts = [format_context(m) for m in said]
            prompts = self.encode(role, questions, format_instruction, contexts, views)
            decoded = decode(
                self.new_trace(batch),
                prompts,
                role.name,
                self.backbone.tokenizer,
                self.config.upstream_decoding,
                self.stop_ids,
                generator,
            )
            for i, d in enumerate(decoded):
                said[i].append(TextMessage(role.name, d.text))
                upstream_tokens[i] += len(d.token_ids)
        return said, upstream_tokens

    def trace_columns(self, questions, fmt, views=None) -> int:
        """The Solver's trace, the longest: its prompt with every upstream agent's message at its full text
        budget (the messages' frame measured with empty texts, plus a margin of 4 tokens and a quarter of the
        budget per agent: a text decoded and encoded again may take more tokens than were generated, 6 for 5 on
        the tiny models' random tokens), and its answer."""
        frame = format_context([TextMessage(r.name, "") for r in self.roles.upstream])
        contexts = [frame] * len(questions)
        prompt = self.longest_prompt(self.roles.solver, questions, fmt, views, contexts)
        budget = self.config.upstream_max_new_tokens
        said = len(self.roles.upstream) * (budget + 4 + budget // 4)
        return prompt + said + self.config.max_new_tokens

    def run(self, questions, format_instruction, generator=None, views=None):
        said, upstream_tokens = self.upstream(questions, format_instruction, generator, views)
        trace = self.new_trace(len(questions), capacity=self.capacity(questions, format_instruction, views))
        contexts = [format_context(m) for m in said]
        answers = self.decode_solver(trace, questions, format_instruction, contexts, generator, views)
        return [
            MethodOutput(
                text=a.text,
                answer=a,
                messages=list(said[i]),
                generated_tokens=upstream_tokens[i] + len(a.token_ids),
                trace_len=a.trace_len,
            )
            for i, a in enumerate(answers)
        ]
