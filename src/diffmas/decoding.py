"""Decoding text from a trace: the decoding agent appends its prompt, then generates token by token.

A loop of our own rather than `generate`, because the trace has latent columns with no token ids and pads in the
middle that `generate` cannot describe; it uses transformers' logits warpers for temperature and top-p. A sample
that finishes leaves the batch (`LatentTrace.keep_rows`), so the others stop paying for it and it never affects
them: greedy decoding of a batch equals decoding each question alone. The trace is consumed: afterwards it holds
only the rows still decoding at the last readback, and each answer's `trace_len` says how long its own trace was.
Per-token log-probabilities and entropies (under the raw model, T = 1) are recorded for the decoding-stability
metrics.

The loop reads nothing from the device per token: choices, log-probs and entropies stay there and are read back
once every `sync_every` steps (each readback of a GPU drains its queue of launched kernels), when the stop checks
run token by token, exactly as if every step had been read. Finished rows leave at that readback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from diffmas.configs import COMPILE_MODES, CompileMode, DecodingSpec, default_of
from diffmas.trace import LatentTrace


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """One agent's decoding; defaults are `diffmas.configs.DecodingSpec`'s (built by `MethodConfig.decode_config`)."""

    max_new_tokens: int = default_of(DecodingSpec, "max_new_tokens")
    temperature: float = default_of(DecodingSpec, "temperature")  # 0 = greedy
    top_p: float = default_of(DecodingSpec, "top_p")
    stop_pattern: str | None = (
        None  # a regex: a sample whose text matches it is finished (its tokens are kept)
    )
    top_k: int | None = default_of(DecodingSpec, "top_k")  # sample among the k likeliest tokens (Qwen3: 20)
    # the answer on a cache of fixed shape (`trace.StaticAnswer`): compacted KV, every step the same shapes
    static_cache: bool = default_of(DecodingSpec, "static_cache")
    # torch.compile the static answer's step in this mode (implies static_cache)
    compile: CompileMode | None = default_of(DecodingSpec, "compile")

    def __post_init__(self) -> None:
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES} or None, got {self.compile!r}")
        if self.stop_pattern is not None:
            try:
                re.compile(self.stop_pattern)
            except re.error as e:
                raise ValueError(f"stop_pattern {self.stop_pattern!r} is not a valid regex: {e}") from e
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 (or None), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def static(self) -> bool:
        return self.static_cache or self.compile is not None


@dataclass
class Decoded:
    """One sample's generated answer. `token_ids` include the stop token when one was produced."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    stopped: bool = False  # ended by a stop token (the last of `token_ids`, left out of `text`)
    matched: bool = False  # ended by the stop pattern (every token kept)
    trace_len: int = 0  # real tokens in the trace when the sample finished (its last token is never fed back)


class IncrementalText:
    """An answer's text, detokenized a few tokens at a time: O(1) decoding work per token, not O(length).

    Decoding the whole answer at every step is O(n^2) per answer (at 32k tokens it costs more than the forward).
    Each step decodes only the tokens since the last emitted boundary plus the one before it (so merges such as
    SentencePiece's leading space see their left neighbour), and holds text back while it ends in a partial UTF-8
    character (at most `MAX_PENDING` tokens: a random model's invalid bytes must not grow the window). `text` is
    what the full decode of `ids` gives for valid text under byte-level and SentencePiece tokenizers.
    """

    MAX_PENDING = 6  # a UTF-8 character is at most 4 byte tokens

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # ids[_prefix:_read] decode to the last emitted piece (the left context)
        self._read = 0

    def add(self, token_id: int) -> str:
        """Append one token; return the whole text so far, a trailing partial character included (as the full
        decode shows it, so a stop pattern fires at the same token)."""
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        after = decode(self.ids[self._prefix :], skip_special_tokens=True)
        tail = after[len(before) :] if after.startswith(before) else after
        if not after.endswith("\ufffd") or len(self.ids) - self._read >= self.MAX_PENDING:
            self.text += tail
            self._prefix, self._read = self._read, len(self.ids)
            return self.text
        return self.text + tail


def stop_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a turn: the tokenizer's eos, the generation config's eos ids, and the chat end token."""
    ids: set[int] = set()
    for source in (
        tokenizer.eos_token_id,
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    for token in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(tid, int):
            ids.add(tid)
    return ids


def generator_on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """`generator` if it lives on `device`, else a fresh one there seeded by a draw from it: `torch.multinomial`
    refuses a generator on another device (a CPU one with CUDA probabilities, or the head on another GPU)."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


def default_sync_every(device: torch.device) -> int:
    """Steps between readbacks: 1 on CPU, where reading a tensor costs no stall (every op has already run), so
    finished rows leave at once; 8 on an accelerator, where each readback drains the queue of launched kernels."""
    return 1 if device.type == "cpu" else 8


def _warpers(config: DecodeConfig) -> LogitsProcessorList:
    warpers = LogitsProcessorList()
    if not config.greedy:
        warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None:
            warpers.append(TopKLogitsWarper(config.top_k))
        if config.top_p < 1:
            warpers.append(TopPLogitsWarper(config.top_p))
    return warpers


def _read_block(
    block: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    rows: list[int],
    out: list[Decoded],
    stop_ids: set[int],
    pattern: re.Pattern | None,
    texts: list[IncrementalText],
) -> list[bool]:
    """Copy a block of steps (token, log-prob, entropy per live row) to the answers, token by token, as if each
    had been read at its own step: a row ends at its first stop token or stop-pattern match, and the tokens it
    drew after that (while the block ran ahead) are dropped. Returns which rows finished."""
    tokens = torch.stack([b[0] for b in block], dim=1).tolist()
    floats = torch.stack(
        [torch.stack([b[1], b[2]], dim=1) for b in block], dim=2
    ).tolist()  # [rows, 2, steps]
    finished = []
    for j, i in enumerate(rows):
        d, done = out[i], False
        for t, token in enumerate(tokens[j]):
            d.token_ids.append(token)
            d.logprobs.append(floats[j][0][t])
            d.entropies.append(floats[j][1][t])
            if token in stop_ids:
                d.stopped = done = True
            elif pattern is not None and pattern.search(texts[i].add(token)) is not None:
                d.matched = done = True
            if done:
                break
        finished.append(done)
    return finished


def decode(
    trace: LatentTrace,
    prompts: Sequence[Sequence[int]],
    role: str,
    tokenizer,
    config: DecodeConfig,
    stop_ids: set[int],
    generator: torch.Generator | None = None,
    *,
    sync_every: int | None = None,
) -> list[Decoded]:
    """Append the decoding agent's prompts to `trace` and generate until a stop token or `max_new_tokens`.

    Each step's choice, log-prob and entropy stay on the device; every `sync_every` steps (None: the device's
    `default_sync_every`) one readback copies them to the answers, runs the stop checks token by token and drops
    the rows that finished. A row that finished inside a block decodes on to its end, masked from nothing and
    read by nobody (rows never attend to each other), so the kept tokens are those of a readback at every step.
    Without grad the trace is first compacted for the answer where that pays (`LatentTrace.compact`: the pads
    between segments and the columns hidden from `role` leave the cache; a trace it leaves dense needs no mask).
    With `config.static` the answer runs on a `StaticAnswer` (fixed shapes, compacted, optionally compiled):
    finished rows stay in its batch, unread, instead of leaving it.
    """
    batch = trace.batch_size
    every = sync_every if sync_every is not None else default_sync_every(trace.device)
    if every < 1:  # before the trace is touched (a static answer consumes it)
        raise ValueError(f"sync_every must be >= 1, got {every}")
    hidden = trace.append_tokens(prompts, role, "prompt")
    base = trace.real_lengths.tolist()  # each sample's trace before its answer
    logits = trace.logits(hidden[:, -1]).float()
    static = trace.static_answer(role, config.max_new_tokens, config.compile) if config.static else None
    if static is None and not (
        not torch.is_grad_enabled()
        and not trace.has_graph
        and trace.compact(role, config.max_new_tokens)  # pads (and hidden columns) out, where it pays
    ):
        trace.reserve(config.max_new_tokens)  # the answer's columns, allocated once
    generator = generator_on(generator, logits.device)
    warpers = _warpers(config)
    out = [Decoded(text="") for _ in range(batch)]
    pattern = re.compile(config.stop_pattern) if config.stop_pattern else None
    rows = list(range(batch))  # rows[j]: which sample the trace's row j decodes (static: the live rows)
    live: torch.Tensor | None = None  # static: the live rows' index into its batch (None: all)
    texts = [IncrementalText(tokenizer) for _ in range(batch)] if pattern is not None else []
    block: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for step in range(config.max_new_tokens):
        logp = torch.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).sum(dim=-1)
        if config.greedy:
            token = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(warpers(None, logits), dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        block.append((token, logp.gather(1, token.unsqueeze(1)).squeeze(1), entropy))
        last = step == config.max_new_tokens - 1
        if last or len(block) == every:
            if live is not None:
                block = [tuple(t.index_select(0, live) for t in b) for b in block]  # type: ignore[misc]
            finished = _read_block(block, rows, out, stop_ids, pattern, texts)
            block = []
            if last or all(finished):
                break
            if any(finished):  # drop finished rows: the rest of the batch stops paying for them
                keep = [j for j, done in enumerate(finished) if not done]
                rows = [rows[j] for j in keep]
                if static is not None:  # a fixed batch: stop reading them
                    live = torch.tensor(rows, device=token.device)
                else:
                    trace.keep_rows(keep)
                    token = token[torch.tensor(keep, device=token.device)]
        if static is not None:
            logits = static.step(token)
        else:
            hidden = trace.append_step(token, role)
            logits = trace.logits(hidden[:, -1]).float()
    for i, d in enumerate(out):
        d.trace_len = int(base[i]) + len(d.token_ids) - 1  # the last token is never fed back
        ids = d.token_ids[:-1] if d.stopped else d.token_ids
        d.text = tokenizer.decode(ids, skip_special_tokens=True)
    return out
