"""Tiny in-process backbones for tests and benchmarks: no download, built from a config in milliseconds.

`tiny_backbone("llama")` has tied embeddings (like SmolLM2); `tiny_backbone("qwen2")` has an untied head (like
Qwen2.5). Both share a small BPE tokenizer trained in-process on a fixed corpus, with a ChatML chat template.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from diffmas.backbones import Backbone

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "You are a Planner agent. Read the question and outline a short plan to solve it step by step.",
    "You are a Critic agent. Check the plan in your context for mistakes and say how to fix them.",
    "You are a Refiner agent. Improve the plan using the critique, keeping what is correct.",
    "You are the Solver. Use the reasoning in your context to solve the question.",
    "Reason step by step, then give the final answer in \\boxed{}. Question: what is 12 + 30?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May? The answer is 72.",
    "def add(a, b):\n    return a + b\n```python\nprint(add(1, 2))\n```",
    "yes no true false (A) (B) (C) (D) option letter the answer is 0 1 2 3 4 5 6 7 8 9 10 100 1,000",
]


@lru_cache(maxsize=1)
def tiny_tokenizer():
    """A ~300-token byte-level BPE tokenizer with a ChatML template, trained on a fixed corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    hf.chat_template = CHATML_TEMPLATE
    return hf


def tiny_backbone(
    arch: str = "llama", *, seed: int = 0, layers: int = 2, hidden: int = 64, init_std: float = 0.15
) -> Backbone:
    """A randomly initialised causal LM of `arch` ("llama": tied head; "qwen2": untied head), fp32, eval mode.

    The default wide init makes greedy outputs vary with the input, so invariance tests can fail. It also makes
    the latent recurrence expansive (gradients through many latent steps explode, unlike a trained model's);
    benchmarks that backpropagate through tens of latent steps pass `init_std=0.02`.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = tiny_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=init_std,
    )
    if arch == "llama":
        config = LlamaConfig(tie_word_embeddings=True, **common)
    elif arch == "qwen2":
        config = Qwen2Config(tie_word_embeddings=False, **common)
    else:
        raise ValueError(f"unknown tiny arch {arch!r}: use 'llama' or 'qwen2'")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    return Backbone(model=model, tokenizer=tokenizer, name=f"tiny-{arch}", source="in-process")


# A tiny chain whose every role takes a `{view}` (tests of per-agent views), and two questions with views.
VIEW_QUESTIONS = ["What is alpha?", "What is beta?"]
VIEWS = [("alpha is 7", "", "beta is 2", ""), ("alpha is 3", "gamma", "", "own")]


def view_chain():
    """Planner-critic-refiner-solver with one-line role prompts, each with `{view}`."""
    from diffmas.roles import RoleChain

    roles = [{"name": n, "template": f"{n}.\n{{view}}\nQ: {{question}}"} for n in ("p", "c", "r")]
    roles.append({"name": "s", "template": "s. {format}\n{view}\n{context}\nQ: {question}"})
    return RoleChain.from_mapping({"roles": roles})


def first_latent_grad(method, questions, fmt: str):
    """The gradient, at the first upstream agent's first latent input, of a loss on the Solver's last prompt token
    (the gradient-route tests: does the Solver's loss reach the agent that wrote first?)."""
    from diffmas.methods import build_latent_trace

    captured: list[torch.Tensor] = []
    realigner = method.realigner

    def capturing(hidden: torch.Tensor) -> torch.Tensor:
        e = realigner(hidden)
        if not captured:
            e.retain_grad()
            captured.append(e)
        return e

    method._realigner = capturing
    trace, _ = build_latent_trace(method, questions, fmt)
    solver = method.roles.solver
    hidden = trace.append_tokens(method.encode(solver, questions, fmt), solver.name)
    trace.logits(hidden[:, -1]).log_softmax(-1)[:, 7].sum().backward()
    return captured[0].grad


def assert_batch_equals_alone(batched, alone, atol: float = 1e-4) -> None:
    """Outputs of one batch vs the same questions run one at a time: same tokens, lengths, log-probs within atol."""
    for b, a in zip(batched, alone, strict=True):
        assert b.answer.token_ids == a.answer.token_ids
        assert b.trace_len == a.trace_len
        assert b.generated_tokens == a.generated_tokens
        torch.testing.assert_close(
            torch.tensor(b.answer.logprobs), torch.tensor(a.answer.logprobs), atol=atol, rtol=0
        )


FAMILIES = ("gemma2", "gemma3", "cohere", "granite", "mistral3", "qwen3", "mistral")


def tiny_family(family: str, *, sliding_window: int | None = None, seed: int = 0, init_std: float = 0.5):
    """A tiny random causal LM of a family whose head or embeddings are not plain, with the tiny
    tokenizer's vocabulary: Gemma 2/3 (softcapping, sqrt(d) embedding scale, sliding layers), Cohere and Granite
    (logit scaling), Mistral3 (a vision-language class), Qwen3 and Mistral (optionally sliding). `sliding_window`
    turns on sliding layers where the family has them. The wide init makes the heads' post-processing visible."""
    import transformers as tf

    vocab = len(tiny_tokenizer())
    common = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=2048, pad_token_id=tiny_tokenizer().pad_token_id,
        bos_token_id=None, eos_token_id=tiny_tokenizer().eos_token_id, initializer_range=init_std,
    )  # fmt: skip
    window = sliding_window or 4096
    alternating = ["sliding_attention", "full_attention"]
    if family == "gemma2":
        config = tf.Gemma2Config(**common, final_logit_softcapping=3.0, sliding_window=window)
    elif family == "gemma3":
        config = tf.Gemma3TextConfig(
            **common, final_logit_softcapping=3.0, sliding_window=window, layer_types=alternating
        )
    elif family == "cohere":
        config = tf.CohereConfig(**common, logit_scale=0.25)
    elif family == "granite":
        config = tf.GraniteConfig(**common, logits_scaling=4.0, embedding_multiplier=3.0)
    elif family == "qwen3":
        sliding = dict(use_sliding_window=True, sliding_window=window, layer_types=alternating)
        config = tf.Qwen3Config(**common, **(sliding if sliding_window else {}))
    elif family == "mistral":
        config = tf.MistralConfig(**common, sliding_window=sliding_window)
    elif family == "mistral3":
        vision = dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=8,
            image_size=16, patch_size=8,
        )  # fmt: skip
        text = dict(common, model_type="ministral3", sliding_window=sliding_window)
        text["max_position_embeddings"] = 262144  # what its default YaRN rope expects
        config = tf.Mistral3Config(text_config=text, vision_config=vision)
        torch.manual_seed(seed)
        return tf.AutoModelForImageTextToText.from_config(config, dtype=torch.float32).eval()
    else:
        raise ValueError(f"unknown tiny family {family!r}: use one of {FAMILIES}")
    torch.manual_seed(seed)
    return tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def padded_trace(model):
    """A 3-row trace with pads at the start (first segment), in the middle (later segments) and in answer
    steps (a finished row): the cases where a kernel could let NaN or inf reach pad columns."""
    from diffmas.realign import build_realigner
    from diffmas.trace import LatentTrace

    trace = LatentTrace(model, 3)
    trace.append_tokens([[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15]], "a")
    trace.latent_steps(2, build_realigner("norm", model), "a")
    trace.append_tokens([[16], [17, 18, 19, 20], [21, 22]], "b")
    trace.append_step(torch.tensor([23, 24, 25]), "b", alive=torch.tensor([True, False, True]))
    trace.append_step(torch.tensor([26, 27, 28]), "b")
    return trace
