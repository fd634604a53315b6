"""The latent KV trace: one append-only, batched KV cache per question, shared by every agent of a chain.

    [planner prompt | m latents | critic prompt | m latents | refiner prompt | m latents | solver prompt | answer]

Batching is where earlier code broke, so the rules are explicit:
- every appended segment is left-padded on its own, so the last column of a segment is real for every sample and
  "the hidden state of the last real token" is simply the last column;
- a 2-D attention mask over the whole trace marks pad columns (0) wherever they sit;
- explicit `position_ids` run contiguously over each sample's real tokens, skipping pads.
A batch therefore computes what one-at-a-time would, up to float rounding.

Channel modes say what a later agent reads of the trace: `full` (every earlier column: upstream prompts and
latents, the paper's setting) or `latents` (a writer sees its own segments and the *latent* columns of other
roles; other roles' prompt and answer columns are masked out for it). The mask of each forward is narrowed, never
the cache: in `latents` mode the only content path from an upstream prompt to the Solver is the m latent columns.
Positions still count every real column, so with two or more upstream agents the position gap between their
latent blocks tells a reader how long the prompt between them was (a few bits of length, no content; with one
upstream agent there is no such gap). A fixed position budget per prompt would close it; not done yet.

Training may narrow the `latents` channel per row: `visible_rows` [B] marks rows that read as in `full` (a
curriculum from the full channel to the bottleneck); each row's mask is then its own channel's, so a mixed batch
still computes what each row alone would in its channel. `show_prefix` lets readers in `latents` mode see, of other
roles' prompts, only each row's item-independent prefix (the `prefix` tokens a prompt segment was appended with:
system prompt and template tokens before any item text).

A latent step feeds back the final (normed) hidden state, or with `latent_layer` the hidden state after that
block (0: the embeddings; -1: the final state), and `layers=` on `append_tokens` hands back the hidden states of
chosen blocks (`layer_states`), for distillation on intermediate layers.

Nothing here detaches or disables grad: callers decide (`torch.no_grad()` for inference, a graph for training).
All use of the transformers cache API lives in this package. Its modules, bottom up:
- `hooks`: `observe`, the profiler hook;
- `layout`: `Segment`, the segment kinds, the channel modes;
- `layers`: the cache layers (`GrowingLayer`, `StepLayer`) and the caches built from them (`new_cache`);
- `parts`: `ModelParts` (body, head, embeddings; `logits` is head + logit transform), `check_head`;
- `masks`: left padding, what a role reads in each channel, the attention masks;
- `checkpointing`: the trace's own gradient checkpointing;
- `edits`: reading and overwriting cache columns in place (the diagnostics' and controls' access);
- `static`: `StaticAnswer`, an answer decoded on a cache of fixed shape, and its reused buffers;
- `latent`: `LatentTrace`.
Every public name is importable from `diffmas.trace`.
"""

from diffmas.trace.hooks import Observer, observe
from diffmas.trace.latent import LatentTrace
from diffmas.trace.layers import GrowingLayer, StepLayer, new_cache
from diffmas.trace.layout import CHANNEL_MODES, ChannelMode, RoleHook, Segment, SegmentKind
from diffmas.trace.masks import attention_masks, left_pad, sliding_window_of, step_mask
from diffmas.trace.parts import ModelParts, check_head, logit_transform
from diffmas.trace.static import _REUSED, StaticAnswer, release_static_buffers

__all__ = [
    "CHANNEL_MODES",
    "ChannelMode",
    "GrowingLayer",
    "LatentTrace",
    "ModelParts",
    "Observer",
    "RoleHook",
    "Segment",
    "SegmentKind",
    "StaticAnswer",
    "StepLayer",
    "_REUSED",
    "attention_masks",
    "check_head",
    "left_pad",
    "logit_transform",
    "new_cache",
    "observe",
    "release_static_buffers",
    "sliding_window_of",
    "step_mask",
]
