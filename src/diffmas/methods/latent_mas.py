"""`latent_mas`: upstream agents write m latent steps each into one shared trace; the Solver decodes from it.

Training-free with the default `ridge` realign (LatentMAS). With trained adapters plugged into the backbone this is
also how a DiffMAS model answers. `build_latent_trace` is shared with training, which runs it with grad.

Controls built on the same trace:
- `no_comm`: no upstream agents at all (the Solver alone, with its own view): equals `single` on view-less tasks.
- `donor`: the Solver reads a trace written for another question of the batch (a seeded derangement). If it
  scores like the real trace, the channel carries nothing about the item.
- `latent_donor`: the Solver keeps its own prompts (and, in `full`, its upstream agents' prompts) and reads the
  latent columns its donor's writers wrote. In `full` it says whether the latents add anything the prompts do not.
- `single_latent`: the compute-matched single agent: one agent that sees every view takes as many latent steps
  as the whole chain takes, then answers. Is a gain the communication or just the extra compute?
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from diffmas.methods.base import LatentMessage, Method, Views
from diffmas.roles import Role, RoleChain
from diffmas.trace import LatentTrace


def build_latent_trace(
    method: Method,
    questions: Sequence[str],
    fmt: str,
    *,
    views: Views = None,
    grad_last: int | None = None,
    steps: int | None = None,
) -> tuple[LatentTrace, list[LatentMessage]]:
    """[role prompt | m latents] for every upstream role, in one trace. With 0 steps the prompts still go in.

    `grad_last=k` keeps only the last k latent steps of each agent in the autograd graph (training);
    `steps` overrides m (the compute-matched control)."""
    m = method.config.latent_steps if steps is None else steps
    trace = method.new_trace(len(questions), capacity=method.capacity(questions, fmt, views))
    messages = []
    for role in method.roles.upstream:
        prompts = method.encode(role, questions, fmt, views=views)
        trace.append_tokens(prompts, role.name, prefix=method.prefix_lengths(role, prompts, fmt))
        start = trace.width
        trace.latent_steps(m, method.realigner, role.name, grad_last=grad_last)
        messages.append(LatentMessage(role.name, start, trace.width, m))
    return trace, messages


class LatentMAS(Method):
    name = "latent_mas"
    takes_latents = True

    def build_trace(self, questions, fmt, views=None, *, grad_last=None):
        return build_latent_trace(self, questions, fmt, views=views, grad_last=grad_last)

    def trace_columns(self, questions, fmt, views=None) -> int:
        return latent_trace_columns(self, questions, fmt, views)


def latent_trace_columns(
    method: Method, questions: Sequence[str], fmt: str, views: Views = None, steps: int | None = None
) -> int:
    """The columns of a `build_latent_trace` trace (or a stitched one) when the Solver's answer ends: each upstream
    prompt and its `steps` latents (None: the config's), then the Solver's prompt and answer."""
    from diffmas.memory import trace_columns

    m = method.config.latent_steps if steps is None else steps
    lengths = [method.longest_prompt(r, questions, fmt, views) for r in method.roles.roles]
    return trace_columns(lengths, m, method.config.max_new_tokens)


class NoCommControl(LatentMAS):
    """`no_comm`: the latent chain with every upstream agent removed, so the Solver reads an empty trace.

    It must equal `single` exactly on tasks without views; with views the Solver keeps only its own."""

    name = "no_comm"

    def __init__(self, backbone, roles=None, config=None, **kwargs):
        super().__init__(backbone, roles, config, **kwargs)
        self.roles = self.roles.solver_only()


def derangement(n: int, seed: str) -> list[int]:
    """A permutation with no fixed point (Sattolo's algorithm: one n-cycle), deterministic in `seed`."""
    if n < 2:
        raise ValueError(
            "the donor control needs at least 2 questions per batch (each reads another's trace)"
        )
    order = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return order


class DonorControl(LatentMAS):
    """`donor`: question i's Solver reads the upstream trace built for another question.

    Evaluation hands each question its donor (`run(..., donors=...)`: a derangement drawn once over the whole split
    from the seed and the item ids, so the pairing does not depend on batch size or on where a run resumed).
    Without donors, the batch is deranged within itself (which needs at least 2 questions)."""

    name = "donor"

    def donors(self, questions: Sequence[str]) -> list[int]:
        return derangement(len(questions), f"{self.config.seed}\x1f" + "\x1f".join(questions))

    def donor_batch(self, questions, views, donors=None):
        """(questions, views) of each question's donor: `donors` as given, else the batch deranged in itself."""
        if donors is not None:
            return donors
        order = self.donors(questions)
        return [questions[j] for j in order], [views[j] for j in order] if views else None

    def build_trace(self, questions, fmt, views=None, *, grad_last=None, donors=None):
        donor_questions, donor_views = self.donor_batch(questions, views, donors)
        return build_latent_trace(self, donor_questions, fmt, views=donor_views, grad_last=grad_last)

    def run(self, questions, format_instruction, generator=None, views=None, donors=None):
        """`donors`: (questions, views) whose upstream trace each question's Solver reads instead of its own."""
        trace, messages = self.build_trace(questions, format_instruction, views, donors=donors)
        answers = self.decode_solver(trace, questions, format_instruction, generator=generator, views=views)
        return self.outputs(answers, messages)


class LatentDonor(DonorControl):
    """`latent_donor`: question i's trace is its own (every upstream prompt included) but its writers' latent
    columns are the ones written for its donor: the donors' writers run in a trace of their own and their latent
    columns are copied over (`LatentTrace.transplant_from`). In the `full` channel it asks whether the latents add
    anything to the upstream prompts the Solver also reads: a Solver that only reads the prompts scores as with
    its own latents. In `latents` it is `donor` up to the copied keys' rotary positions. Two traces a batch: it
    counts two rows a question against the memory budget."""

    name = "latent_donor"
    rows_per_question = 2

    def build_trace(self, questions, fmt, views=None, *, grad_last=None, donors=None):
        donor_questions, donor_views = self.donor_batch(questions, views, donors)
        if len(donor_questions) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(donor_questions)} donors")
        trace, messages = build_latent_trace(self, questions, fmt, views=views, grad_last=grad_last)
        with torch.no_grad():
            theirs, their_messages = build_latent_trace(self, donor_questions, fmt, views=donor_views)
            for mine, donor in zip(messages, their_messages, strict=True):
                trace.transplant_from(theirs, mine.start, donor.start, mine.end - mine.start)
        return trace, messages


class SingleLatent(LatentMAS):
    """`single_latent`: a thinker with the Solver's prompt and every view writes m x (upstream agents) latent
    steps, then the Solver (every view) answers: the chain's latent compute without any communication."""

    name = "single_latent"
    sees_all_views = True

    def __init__(self, backbone, roles=None, config=None, **kwargs):
        super().__init__(backbone, roles, config, **kwargs)
        solver = self.roles.solver
        self.total_steps = self.config.latent_steps * len(self.roles.upstream)
        self.roles = RoleChain((Role("thinker", solver.template, solver.strip), solver), self.roles.system)

    def build_trace(self, questions, fmt, views=None, *, grad_last=None):
        return build_latent_trace(
            self, questions, fmt, views=views, grad_last=grad_last, steps=self.total_steps
        )

    def trace_columns(self, questions, fmt, views=None) -> int:
        return latent_trace_columns(self, questions, fmt, views, steps=self.total_steps)
