"""`DiffMASTrainer`: setup -> train -> save, for DiffMAS and the trained baselines on the same data and budget.

- AdamW, cosine (or constant) schedule with warmup, gradient accumulation, clipping, seeds.
- accelerate for devices and multi-process data parallel. The trace calls the model's body and head directly (not
  the module's forward), so instead of a DDP wrapper the trainable gradients are averaged across processes
  explicitly after backward; every rank therefore applies the same update and ends with the same weights.
- Logs loss, grad norm, lr and tokens/s to the console, `metrics.jsonl` and the trackers of `run.report_to`
  (TensorBoard by default; `diffmas.training.tracking`).
- Checkpoints hold the adapters, optimizer, scheduler, RNG states, step and data position; `resume` continues
  exactly. Writes are atomic (temp dir + rename; the files are `diffmas.training.checkpoints`'s). A checkpoint
  is only written when every trainable parameter and optimizer state tensor is finite; `resume` checks the same
  and falls back to the previous checkpoint (saying so, moving the bad one aside) when the newest is truncated,
  unreadable or non-finite.
- A non-finite loss, gradient, update or parameter (or an update that overflows, e.g. at lr 1e39) stops the run
  with a clear message naming the last good checkpoint. A checkpoint whose weights give the failing step's batch a
  non-finite loss again is not good (a huge learning rate leaves finite but useless weights of 1e30): it is moved
  aside as `poisoned-step-*` and the one before it is named.

The items, targets and micro-batch order are `diffmas.training.data`'s; in-training evaluation answers and grades
through `diffmas.evaluation.answer_items`, the loop of `diffmas eval`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from diffmas.adapters import ModelState, add_lora, save_adapters, unload_lora
from diffmas.backbones import Backbone
from diffmas.diagnostics.gradient import writer_reader_grad_norms
from diffmas.evaluation import answer_items, longest_first, warn_long_questions
from diffmas.methods import Method, MethodConfig, get_method
from diffmas.realign import (
    OracleRealigner,
    embedding_matrices,
    message_ids,
    slot_embeddings,
    writer_messages,
)
from diffmas.records import append_jsonl, locked_dir, prepare_dir
from diffmas.roles import RoleChain
from diffmas.tasks import Task, get_task
from diffmas.tasks.base import Item
from diffmas.terminal import RunProgress, progress_enabled
from diffmas.training import checkpoints, data, tracking
from diffmas.training.checkpoints import (
    CHECKPOINT_FILES,
    CheckpointError,
    first_non_finite,
    optimizer_tensors,
    read_checkpoint,
)
from diffmas.training.config import TrainConfig
from diffmas.training.objective import Batch, answer_weights, batch_loss, full_channel
from diffmas.training.specs import train_spec

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "CHECKPOINT_FILES",
    "CheckpointError",
    "DiffMASTrainer",
    "NonFiniteLossError",
    "check_distributed",
    "console_line",
    "first_non_finite",
    "optimizer_tensors",
    "read_checkpoint",
]


class NonFiniteLossError(RuntimeError):
    """Raised when a step produces a NaN/inf loss, gradient or update; the last good checkpoint is kept."""


# the terminal's short names of metrics.jsonl fields (the file keeps the full names and every field)
_SHORT = {
    "grad_norm": "|g|",
    "target_tokens": "tok",
    "target_tokens_per_s": "tok/s",
    "seconds": "s",
    "eval_accuracy": "eval_acc",
    "eval_n": "n",
    "distill_hidden": "d_h",
    "distill_kl": "d_kl",
    "full_rows": "full",
    "channel_p": "p",
}
# metrics.jsonl and the trackers only: the terminal line keeps within 80 columns
_FILE_ONLY = {"grad_norm_writer", "grad_norm_reader"}


def console_line(row: dict[str, Any], steps: int) -> str:
    """One logged row as a terminal line that fits 80 columns: short names, 4 significant digits, thousands as `k`
    and millions as `M` (metrics.jsonl keeps the exact values). A step row stays within 80 characters up to
    100,000 steps and a loss and gradient norm below 1000."""
    parts = [f"step={row['step']}/{steps}"]
    for key, value in row.items():
        if key != "step" and key not in _FILE_ONLY:
            parts.append(f"{_SHORT.get(key, key.removeprefix('eval_'))}={_compact(value)}")
    return " ".join(parts)


def _compact(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.4g}M"
    if size >= 1e4:
        return f"{value / 1e3:.4g}k"
    if isinstance(value, int) or size >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}".replace("e-0", "e-")


UNSUPPORTED_SHARDING = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed", "MEGATRON_LM": "Megatron-LM"}


def check_distributed(accelerator: Accelerator | None = None) -> None:
    """Refuse a sharded launch (FSDP, DeepSpeed): the trace calls the model's layers directly, so nothing would be
    sharded and every rank would silently hold a full replica. Plain multi-process data parallel is supported.
    Without `accelerator`, the launcher's environment alone is checked (before accelerate acts on it)."""
    found = getattr(accelerator, "distributed_type", None)
    kind = str(getattr(found, "name", found))  # an enum member's name ("FSDP"), else the value as text
    asked = [name for env, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"))
             if os.environ.get(env, "").lower() in ("1", "true", "yes")]  # fmt: skip
    if kind in UNSUPPORTED_SHARDING or asked:
        name = UNSUPPORTED_SHARDING.get(kind) or asked[0]
        raise ValueError(
            f"{name} is not supported: diffmas does not shard the model, so each process would hold a full "
            "replica. Launch plain data parallel instead (`accelerate launch --multi_gpu`, or torchrun), with a "
            "backbone that fits one device; see docs/distributed.md"
        )


def place_backbone(backbone: Backbone, device: torch.device) -> None:
    """Move a backbone handed to the trainer onto the trainer's device (`model.device`, as accelerate resolved
    it), in place: left on the CPU it would train there while the run says GPU. A model split over several devices
    (a `device_map`) or without weights (meta) is refused: the trace runs every layer on one device."""
    model = backbone.model
    found = {t.device for t in (*model.parameters(), *model.buffers())}
    if len(found) > 1 or any(d.type == "meta" for d in found):
        where = ", ".join(sorted(map(str, found)))
        raise ValueError(
            f"model.device is {device}, but the backbone given lies on {where}: put it on one device"
        )
    if found and not _same_device(next(iter(found)), device):
        model.to(device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """`cuda` and `cuda:0` are the same device when 0 is the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


class DiffMASTrainer:
    """One training run. `backbone` may be passed in (already loaded, without adapters) to share a model; `setup`
    moves it to `model.device` (`place_backbone`), where it stays after `release`.

    `train_data` / `eval_data` (a list of dicts or Items, or a `datasets.Dataset`; see `diffmas.data`) replace
    the task `data.task` names, which then only labels the data. Each callback gets every logged row (a dict:
    step, loss, lr, ... or eval_accuracy) on the main process. `progress`: draw a progress bar of the steps and of
    the held-out evaluation's items (None: when the console is a terminal and not quiet; main process only)."""

    def __init__(
        self,
        cfg: TrainConfig,
        backbone: Backbone | None = None,
        console=None,
        *,
        train_data=None,
        eval_data=None,
        callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
        progress: bool | None = None,
    ):
        from rich.console import Console

        self.cfg = cfg
        self._train_data, self._eval_data, self._callbacks = train_data, eval_data, tuple(callbacks)
        self.out = Path(cfg.run.out)
        self.console = console or Console()
        self._base = backbone
        self._show_progress = progress
        # steps and evaluated items (a bar with an ETA on a terminal once `train` runs, see `_start_progress`)
        self.progress = RunProgress(self.console, cfg.optim.steps, enabled=False)
        self.step = 0
        self.position = 0  # micro-batches consumed (global, across processes)
        self.history: list[dict[str, Any]] = []
        self._resume_point: tuple[Path, dict[str, Any]] | None = (
            None  # the checkpoint `resume` continues from
        )
        self._last_good: Path | None = None  # the newest checkpoint known good (named when a run stops)
        self._run_lock = contextlib.ExitStack()  # holds run.out's lock from `setup` to the end of `train`

    # ------------------------------------------------------------------ setup
    def setup(self, resume: bool = False) -> None:
        """Load everything. A run directory that already holds a run is only reused with `resume=True`.

        run.out is locked from here to the end of `train` (as `diffmas eval` locks its --out): a second run on it
        fails at once instead of interleaving its rows and checkpoints with this one's."""
        try:
            self._setup(resume)
        except BaseException:
            self._run_lock.close()
            raise

    def _setup(self, resume: bool) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.cfg
        check_distributed()
        self._tracker_names = tracking.require_trackers(cfg.run.report_to)  # before anything loads
        self.accelerator = Accelerator(
            cpu=cfg.model.device == "cpu",
            mixed_precision=cfg.optim.mixed_precision,
            log_with=tracking.log_with(self._tracker_names, self.out) or None,
            project_dir=str(self.out),
        )
        check_distributed(self.accelerator)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.shard = data.shard_of(self.accelerator)
        set_seed(cfg.run.seed)
        self.metrics_path = self.out / "metrics.jsonl"
        if self.out.exists() or self.accelerator.is_main_process:
            prepare_dir(self.out, "run.out")
        if self.accelerator.is_main_process:  # the other ranks of this run write nothing of their own here
            self._run_lock.enter_context(locked_dir(self.out, "run.out"))
        self._check_run_dir(resume)
        cfg = self.cfg  # a resumed run may keep settings of its checkpoint (`TrainConfig.following`)
        if self.accelerator.is_main_process:
            (self.out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        self.task: Task = self._task()
        items = self.task.load(cfg.data.split)
        self.items: list[Item] = items[: cfg.data.n_train] if cfg.data.n_train else items
        self.roles = RoleChain.load(cfg.method.roles)
        self.fmt = self.task.format_instruction
        base = self._base
        if base is None:
            from diffmas.backbones import load_backbone

            base = load_backbone(
                cfg.model.name,
                **{**cfg.model.load_kwargs(), "device": str(self.accelerator.device)},
            )
        else:
            place_backbone(base, self.accelerator.device)
        self._base_state: ModelState | None = ModelState.of(base.model)  # what `release` puts back
        for p in base.model.parameters():
            p.requires_grad_(False)
        warn_long_questions(base, self.task, self.items)
        self.spec = train_spec(cfg.method.train_method)
        self.contexts = self._text_contexts(base) if self.spec.text_contexts else None
        self.targets = self._targets(base)
        self._check_layers(base)
        self.weights = None
        if cfg.method.answer_token_weight != 1.0:
            ids = [it.id for it in self.items]
            rows = answer_weights([self.targets[i] for i in ids], cfg.method.answer_token_weight)
            self.weights = dict(zip(ids, rows))
        role_names = [r.name for r in self.roles.roles]
        self.backbone, self.role_hook = add_lora(base, cfg.lora, cfg.lora.adapters, role_names)
        if cfg.lora.adapters == "per_role" and not self.spec.latent:
            raise ValueError(
                f"lora.adapters 'per_role' needs upstream agents with latent segments, not {cfg.method.train_method}"
            )
        self._freeze_writers()
        self.method = self._method(self.backbone, realign=cfg.method.realign)
        self.realigner = self.method.realigner if self.spec.latent else None
        self.oracle = self._oracle_warmup()
        self.teacher = full_channel(self.method) if cfg.method.distill is not None else None
        self.params = [p for p in self.backbone.model.parameters() if p.requires_grad]
        if self.realigner is not None:
            self.params += [p for p in self.realigner.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self._param_groups(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.scheduler = self._scheduler()

    @property
    def frozen_writer(self) -> bool:
        """`grad_mode: solver` on a method with upstream writers: they stay at their initialisation (the base
        model), whatever the adapter mode: the honest control for "does training the writer matter"."""
        return self.cfg.method.grad_mode == "solver" and not self.spec.solver_only

    @property
    def solver_only(self) -> bool:
        """Whether the adapter runs for the Solver alone (in training, evaluation and the saved manifest)."""
        return self.spec.solver_only or (self.frozen_writer and self.cfg.lora.adapters == "shared")

    def _freeze_writers(self) -> None:
        """A frozen writer: per-role adapters of the upstream roles never train (no grad, not in the optimizer);
        a shared adapter runs for the Solver only, so the writers are the untrained base model."""
        if not self.frozen_writer:
            return
        if self.cfg.lora.adapters == "per_role":
            solver = self.roles.solver.name
            for name, p in self.backbone.model.named_parameters():
                if "lora_" in name and f".{solver}." not in name:
                    p.requires_grad_(False)
        else:
            from diffmas.adapters import SolverOnly

            self.role_hook = SolverOnly(self.backbone.model, self.roles.solver.name)

    def _oracle_warmup(self) -> OracleRealigner | None:
        """`method.oracle_warmup`: the method's writers realign through an oracle wrapped around their own
        realigner (`self.realigner`, still the one trained and saved), fed per micro-batch in `_batch_loss`."""
        if self.cfg.method.oracle_warmup is None:
            return None
        head = None
        if self.cfg.method.message_loss:
            head, _ = embedding_matrices(self.backbone.model)
        oracle = OracleRealigner(inner=self.realigner, head=head)
        self.method.realigner = oracle
        return oracle

    def _feed_oracle(self, batch: Batch) -> None:
        """The oracle's slots for this micro-batch: each writer's message's token embeddings (`batch.messages`),
        taken by the rows in `batch.oracle_rows`; their ids too when the message loss scores the writers."""
        assert self.oracle is not None and batch.messages is not None and batch.oracle_rows is not None
        ids = message_ids(self.backbone.tokenizer, batch.messages, max(1, self.cfg.method.latent_steps))
        self.oracle.feed(
            slot_embeddings(self.backbone.model, ids),
            torch.tensor(batch.oracle_rows, dtype=torch.bool),
            ids=ids if self.cfg.method.message_loss else None,
        )

    def _param_groups(self) -> list[dict[str, Any]]:
        """One group, or with `optim.writer_lr` / `reader_lr` (per-role adapters) the writers' adapters and the
        learned realigner, and the Solver's adapter, each at its rate."""
        o = self.cfg.optim
        if o.writer_lr is None and o.reader_lr is None:
            return [{"params": self.params}]
        solver = self.roles.solver.name
        reader = [
            p for n, p in self.backbone.model.named_parameters() if p.requires_grad and f".{solver}." in n
        ]
        ids = {id(p) for p in reader}
        writer = [p for p in self.params if id(p) not in ids]
        return [
            {"params": writer, "lr": o.writer_lr or o.lr, "name": "writer"},
            {"params": reader, "lr": o.reader_lr or o.lr, "name": "reader"},
        ]

    def _check_layers(self, base: Backbone) -> None:
        """Layer indices of the config against the model's blocks (0: embeddings ... blocks, -1: final)."""
        config = (
            base.model.config.get_text_config() if hasattr(base.model.config, "get_text_config") else None
        )
        blocks = int(getattr(config or base.model.config, "num_hidden_layers", 0))
        m = self.cfg.method
        asked = [("method.latent_layer", m.latent_layer)] if m.latent_layer is not None else []
        asked += [("method.distill.layers", k) for k in (m.distill.layers if m.distill else [])]
        for name, index in asked:
            if not -(blocks + 1) <= index <= blocks:
                raise ValueError(
                    f"{name}: {index} is out of range for {base.name} ({blocks} blocks: 0 = the embeddings, "
                    f"{blocks} or -1 = the final state)"
                )

    def release(self) -> None:
        """Give the backbone back as it came: the LoRA layers unloaded, `requires_grad` flags and train/eval modes
        as before `setup`, so a caller sharing one base model across runs never needs a copy. Ends the trainer."""
        self._run_lock.close()
        state = getattr(self, "_base_state", None)
        wrapped = getattr(self, "backbone", None) or self._base
        if state is None or wrapped is None:
            return
        base = unload_lora(wrapped.model, state)
        self.backbone = Backbone(base, wrapped.tokenizer, wrapped.name, wrapped.source)
        self._base_state = None

    def _check_run_dir(self, resume: bool) -> None:
        """Never mix two runs in one directory: a fresh run refuses a used one; a resumed run must match its config."""
        used = any((self.out / name).exists() for name in ("metrics.jsonl", "checkpoints", "adapter"))
        if not resume:
            if used:
                raise ValueError(self._used_dir_message())
            return
        self._resume_point = self._usable_checkpoint()
        if self._resume_point is None:
            if self.accelerator.is_main_process and self.metrics_path.exists():
                self.metrics_path.unlink()  # rows of a run killed before its first checkpoint: start over
            return
        ckpt, loaded = self._resume_point
        saved = loaded["config"]
        self.cfg = self.cfg.following(
            saved, yaml.safe_load((ckpt / "config.yaml").read_text(encoding="utf-8"))
        )
        a, b = saved.resume_key(), self.cfg.resume_key()
        if a != b:
            diff = [f"{s}.{k}" for s in a for k in a[s] if a[s].get(k) != b[s].get(k)]
            raise ValueError(f"cannot resume {ckpt}: the config differs in {', '.join(diff)}")
        step = loaded["state"]["step"]
        if self.cfg.optim.steps < step:
            raise ValueError(
                f"cannot resume {ckpt} with optim.steps={self.cfg.optim.steps}: the checkpoint is at step {step}, "
                f"and the budget may grow but not shrink below it (set optim.steps={step} or more)"
            )

    def _finished_step(self) -> int | None:
        """The step of the final adapter in run.out (None when the run never finished): its manifest's `step`."""
        from diffmas.adapters import MANIFEST_FILE

        try:
            step = json.loads((self.out / "adapter" / MANIFEST_FILE).read_text(encoding="utf-8"))["step"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return step if isinstance(step, int) else None

    def _used_dir_message(self) -> str:
        """Why a fresh run refuses run.out, and the one way on: continue the run there, or pick another folder."""
        finished = self._finished_step()
        if finished is not None:
            return (
                f"{self.out} already holds a training run, finished at step {finished}: to train it further, "
                f"pass --resume with a larger optim.steps (e.g. optim.steps={2 * finished}), or choose another "
                "run.out"
            )
        found = self._checkpoints()
        at = f", stopped at step {checkpoints.checkpoint_step(found[-1])}" if found else ""
        return f"{self.out} already holds a training run{at}: pass --resume to continue it, or choose another run.out"

    def _usable_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that reads back whole and finite, with its contents. Newer ones that do not (a
        file truncated by a full disk, a poisoned state) are reported and moved aside as `broken-step-*`."""
        for ckpt in reversed(self._checkpoints()):
            try:
                return ckpt, checkpoints.read_checkpoint(ckpt)
            except CheckpointError as e:
                self.console.print(f"[yellow]{e}; falling back to the previous checkpoint[/yellow]")
                self._move_aside(ckpt, "broken")
        return None

    def _move_aside(self, ckpt: Path, why: str) -> None:
        """Keep a checkpoint that must not be resumed from under a name `resume` never picks (main process)."""
        if self.accelerator.is_main_process:
            checkpoints.move_aside(ckpt, why)

    def _method(self, backbone: Backbone, **decoding: Any) -> Method:
        """The method that answers with the adapter: the config's `method:` section (`MethodConfig.from_spec`),
        the held-out evaluation's answer budget, the task's answer stop, and `decoding` over them."""
        cfg = self.cfg.method
        mc = MethodConfig.from_spec(
            cfg,
            max_new_tokens=cfg.eval_max_new_tokens,
            answer_stop=self.task.answer_stop,
            seed=self.cfg.run.seed,
            **{k: v for k, v in decoding.items() if v is not None},
        )
        name = train_spec(cfg.train_method).eval_method
        return get_method(
            name,
            backbone,
            self.roles,
            mc,
            role_hook=getattr(self, "role_hook", None),
            checkpoint=cfg.gradient_checkpointing,
        )

    def _scheduler(self) -> LambdaLR:
        from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

        o = self.cfg.optim
        if o.schedule == "cosine":
            return get_cosine_schedule_with_warmup(self.optimizer, o.warmup_steps, o.steps)
        return get_constant_schedule_with_warmup(self.optimizer, o.warmup_steps)

    # ------------------------------------------------------------------ data
    def _text_contexts(self, base: Backbone) -> dict[str, str]:
        """text_mas_sft: what the untrained upstream agents say, generated once, greedily."""
        from diffmas.methods.text_mas import TextMAS

        def make() -> list[dict[str, str]]:
            m = self.cfg.method
            mc = MethodConfig(
                upstream_max_new_tokens=m.upstream_max_new_tokens, chat_template_kwargs=m.chat_template_kwargs
            )
            return data.text_contexts(TextMAS(base, self.roles, mc), self.task, self.items, self.shard)

        rows = data.cached_jsonl(self.out / "text_contexts.jsonl", self.items, self.shard, make)
        return {k: v["context"] for k, v in rows.items()}

    def _targets(self, base: Backbone) -> dict[str, list[int]]:
        """Each training item's target token ids; `self.items` keeps only the items that have one."""
        spec = self.cfg.data.targets
        if spec == "reference":
            texts = data.reference_texts(self.task, self.items, self.cfg.method.chat_template_kwargs)
        elif spec == "self":
            path = self.out / "self_targets.jsonl"
            rows = data.cached_jsonl(path, self.items, self.shard, lambda: self._sample_targets(base))
            texts = {k: v["target"] for k, v in rows.items()}
        else:
            texts = data.file_texts(Path(spec))
        kept, targets = data.encode_targets(base.tokenizer, self.items, texts, spec)
        if len(kept) < len(self.items):
            self.console.print(
                f"[yellow]{len(self.items) - len(kept)} items have no target and are skipped[/yellow]"
            )
        self.items = kept
        return targets

    def _sample_targets(self, base: Backbone) -> list[dict[str, Any]]:
        """`targets: self`: this rank's rows of the untrained method's graded-correct samples."""
        d = self.cfg.data
        realign = "ridge" if self.cfg.method.realign == "learned" else self.cfg.method.realign
        greedy = self._method(base, realign=realign, max_new_tokens=d.self_max_new_tokens)
        sampler = self._method(
            base,
            realign=realign,
            temperature=d.self_temperature,
            top_p=d.self_top_p,
            top_k=d.self_top_k,
            max_new_tokens=d.self_max_new_tokens,
        )
        return data.sample_targets(
            self.task, self.items, self.shard, greedy, sampler, d, self.cfg.run.seed, base.device
        )

    def _micro_batch(self) -> Batch:
        """The next micro-batch for this rank: a seeded permutation per epoch, sharded across processes."""
        mine = data.micro_batch_items(
            self.items, self.position, self.cfg.optim.batch_size, self.shard, self.cfg.run.seed
        )
        position = self.position
        self.position += 1
        batch = data.make_batch(self.task, mine, self.targets, self.contexts)
        if self.weights is not None:
            batch.weights = [self.weights[it.id] for it in mine]
        curriculum = self.cfg.method.curriculum
        if curriculum is not None:
            batch.visible_rows = data.curriculum_rows(
                curriculum.probability(self.step), len(mine), self.cfg.run.seed, position, self.rank
            )
        warmup = self.cfg.method.oracle_warmup
        if warmup is not None:
            batch.messages = [writer_messages(it, len(self.roles.upstream)) for it in mine]
            # a draw of its own (another seed), independent of the channel curriculum's
            batch.oracle_rows = data.curriculum_rows(
                warmup.probability(self.step), len(mine), self.cfg.run.seed + 7_919, position, self.rank
            )
        return batch

    def _batch_loss(self, batch: Batch, grad_last: int | None = None) -> tuple[torch.Tensor, float]:
        m = self.cfg.method
        if self.oracle is not None:
            self._feed_oracle(batch)
        try:
            loss, n = batch_loss(
                self.method,
                batch,
                self.fmt,
                m.grad_mode,
                grad_last,
                m.target_chunk,
                distill=m.distill,
                teacher=self.teacher,
            )
            message = self.oracle.message_loss() if self.oracle is not None else None
            if message is not None:  # a mean per latent step, weighed as the caller's mean per target token
                batch.terms["message"] = float(message.detach()) * n
                loss = loss + m.message_loss * n * message
            return loss, n
        finally:
            if self.oracle is not None:
                self.oracle.clear()

    # ------------------------------------------------------------------ training
    def train(self, resume: bool = False) -> dict[str, Any]:
        """Run the steps (from the checkpoint with `resume`); run.out's lock is released when this returns."""
        try:
            return self._train(resume)
        finally:
            self.progress.close()
            self._end_trackers()
            self._run_lock.close()

    def _train(self, resume: bool) -> dict[str, Any]:
        cfg = self.cfg
        finished = self._finished_step() if resume else None
        if finished is not None and finished == cfg.optim.steps:
            self.console.print(
                f"nothing to train: {self.out} finished at step {finished} (optim.steps); to train it further, "
                f"resume with a larger optim.steps (e.g. optim.steps={2 * finished})",
                soft_wrap=True,
            )
            return {"adapter": str(self.out / "adapter"), "history": []}
        if resume:
            self._resume()
        self._start_trackers()
        self._start_progress()
        if finished is not None and self.step < finished:
            self.console.print(
                f"the newest checkpoint is step {self.step}, before the run's end at step {finished}: steps "
                f"{self.step + 1}-{finished} are trained again (the same updates)",
                soft_wrap=True,
            )
        self.backbone.model.train()
        grad_last = cfg.method.truncate_latents
        if cfg.run.eval_at_start and self.step == 0 and cfg.data.eval_split:
            self._log({"step": 0, **self.evaluate()})
        while self.step < cfg.optim.steps:
            t0 = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum, tokens, first = 0.0, 0, None
            terms: dict[str, float] = {}
            for _ in range(cfg.optim.grad_accum):
                batch = self._micro_batch()
                first = first or batch
                with self.accelerator.autocast():
                    loss, n = self._batch_loss(batch, grad_last)
                (loss / n / cfg.optim.grad_accum).backward()
                loss_sum += loss.item() / n / cfg.optim.grad_accum
                tokens += sum(len(t) for t in batch.targets)
                if (
                    cfg.method.distill is not None
                    or batch.visible_rows is not None
                    or cfg.method.message_loss
                ):
                    for key, value in batch.terms.items():
                        terms[key] = terms.get(key, 0.0) + value / n / cfg.optim.grad_accum
                    if batch.visible_rows is not None:
                        share = sum(batch.visible_rows) / len(batch.visible_rows) / cfg.optim.grad_accum
                        terms["full_rows"] = terms.get("full_rows", 0.0) + share
                if batch.oracle_rows is not None:
                    share = sum(batch.oracle_rows) / len(batch.oracle_rows) / cfg.optim.grad_accum
                    terms["oracle_rows"] = terms.get("oracle_rows", 0.0) + share
            self._average_gradients()
            loss_mean = self._mean_across_ranks(loss_sum)
            # per-role adapters: the writers' and the Solver's gradient norms apart (before clipping)
            roles = [r.name for r in self.roles.roles]
            split = (
                writer_reader_grad_norms(self.backbone.model, roles)
                if cfg.lora.adapters == "per_role"
                else {}
            )
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.max_grad_norm or float("inf"))
            if not (math.isfinite(loss_mean) and math.isfinite(float(norm))):
                self.optimizer.zero_grad(set_to_none=True)
                raise self._stop(
                    f"non-finite loss ({loss_mean}) or gradient norm ({float(norm)}) at step {self.step + 1}",
                    recheck=first,
                )
            self._update()
            self.scheduler.step()
            self.step += 1
            seconds = time.perf_counter() - t0
            row = {
                "step": self.step,
                "loss": round(loss_mean, 6),
                "grad_norm": round(float(norm), 6),
                **{k: round(v, 6) for k, v in split.items()},
                "lr": self.scheduler.get_last_lr()[0],
                "target_tokens": tokens * self.world,
                "target_tokens_per_s": round(tokens * self.world / seconds, 2),
                "seconds": round(seconds, 3),
                **{k: round(self._mean_across_ranks(v), 6) for k, v in terms.items()},
            }
            if cfg.method.curriculum is not None:
                row["channel_p"] = round(cfg.method.curriculum.probability(self.step - 1), 6)
            if cfg.method.oracle_warmup is not None:
                row["oracle_p"] = round(cfg.method.oracle_warmup.probability(self.step - 1), 6)
            self.progress.step(self.step, loss_mean, row["target_tokens_per_s"])
            self._log(row)
            if cfg.run.eval_every and self.step % cfg.run.eval_every == 0 and self.step < cfg.optim.steps:
                self._log({"step": self.step, **self.evaluate()})
            # the last step is checkpointed too, so that a finished run can be resumed with a larger budget
            if self.step % cfg.run.save_every == 0 or self.step in (cfg.run.stop_after, cfg.optim.steps):
                self.save_checkpoint()
            if cfg.run.stop_after is not None and self.step >= cfg.run.stop_after:
                return {"stopped_at": self.step, "history": self.history}
        adapter = self.save()
        result: dict[str, Any] = {"adapter": str(adapter), "history": self.history}
        if cfg.run.eval_at_end and cfg.data.eval_split:
            result["eval"] = self.evaluate()
            self._log({"step": self.step, **result["eval"]})
        return result

    def _update(self) -> None:
        """The optimizer step, refusing an update that overflows or leaves a parameter non-finite."""
        step = self.step + 1
        try:
            self.optimizer.step()
        except RuntimeError as e:
            if "overflow" not in str(e):
                raise
            raise self._stop(f"the update at step {step} overflowed ({e})") from None
        bad = first_non_finite(self._named_trainable())
        if bad:
            raise self._stop(f"the update at step {step} left a non-finite parameter ({bad})")

    def _stop(self, reason: str, recheck: Batch | None = None) -> NonFiniteLossError:
        """The error that ends a diverged run, naming the last good checkpoint.

        With `recheck` (the failing step's first micro-batch): when the weights in memory are the newest
        checkpoint's and give that batch a non-finite loss again, the checkpoint is poisoned, not good (a huge
        learning rate leaves finite weights of 1e30 that only fail at the next step)."""
        if recheck is not None and self._last_good is not None and self._poisoned(recheck):
            moved = self._last_good
            self._move_aside(moved, "poisoned")
            self.accelerator.wait_for_everyone()
            usable = self._usable_checkpoint()
            self._last_good = usable[0] if usable else None
            reason += (
                f"; the weights of {moved.name} fail that batch too, so it was moved to poisoned-{moved.name}"
            )
        if self._last_good is not None:
            step = checkpoints.checkpoint_step(self._last_good)
            where = f"last good checkpoint is step {step} in {self._last_good.parent}"
        else:
            where = f"no good checkpoint in {self.out / 'checkpoints'}"
        hint = f"with optim.lr {self.cfg.optim.lr:g}: if the run diverged, lower it and start afresh"
        return NonFiniteLossError(f"{reason}; stopped, {where} ({hint})")

    def _poisoned(self, batch: Batch) -> bool:
        """Whether the newest checkpoint holds exactly the weights in memory and they fail `batch` again."""
        ckpt = self._last_good
        if ckpt is None or checkpoints.checkpoint_step(ckpt) != self.step:
            return False
        return not math.isfinite(self._recheck_loss(batch))

    def _recheck_loss(self, batch: Batch) -> float:
        """The loss of `batch` under the current weights (mean across processes), without a gradient."""
        with torch.no_grad(), self.accelerator.autocast():
            loss, n = self._batch_loss(batch)
        return self._mean_across_ranks(float(loss) / max(n, 1))

    def _average_gradients(self) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world

    def _mean_across_ranks(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], device=self.accelerator.device)
        return float(self.accelerator.reduce(t, reduction="mean").item())

    def _task(self) -> Task:
        """The task `data.task` names, or the Python data given to the trainer."""
        cfg = self.cfg.data
        if self._train_data is None:
            return get_task(cfg.task, **cfg.task_args)
        from diffmas.data import items_task

        return items_task(
            self._train_data, self._eval_data, train_split=cfg.split, eval_split=cfg.eval_split, name=cfg.task
        )

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.accelerator.is_main_process:
            return
        for callback in self._callbacks:
            callback(dict(row))
        append_jsonl(
            self.metrics_path, [row]
        )  # one whole line per write, fsynced: a kill leaves a torn tail only
        if self.accelerator.trackers:
            self.accelerator.log(tracking.scalars(row), step=row["step"])
        if row["step"] % self.cfg.run.log_every == 0 or any("eval" in k for k in row):
            self.console.print(console_line(row, self.cfg.optim.steps), highlight=False)

    def _start_progress(self) -> None:
        """The run's progress bar from the step it starts at (drawn on the main process, see `RunProgress`)."""
        show = self._show_progress if self._show_progress is not None else progress_enabled(self.console)
        enabled = show and self.accelerator.is_main_process
        self.progress = RunProgress(self.console, self.cfg.optim.steps, self.step, enabled=enabled).start()

    def _start_trackers(self) -> None:
        """Start `run.report_to`'s trackers once the run's step is known (main process; accelerate's trackers).
        Resumed, TensorBoard hides the events of the steps after the checkpoint (`purge_step`), as metrics.jsonl
        drops their rows, so that steps trained again are not plotted twice."""
        from accelerate.tracking import TensorBoardTracker

        if not self._tracker_names or self.accelerator.trackers:
            return
        for tracker in self.accelerator.log_with:
            if isinstance(tracker, TensorBoardTracker) and self.step > 0:
                tracker.init_kwargs["purge_step"] = self.step + 1
        self.accelerator.init_trackers(
            tracking.PROJECT,
            config=tracking.flat_config(self.cfg.model_dump()),
            init_kwargs=tracking.init_kwargs(self._tracker_names, self.out.name),
        )

    def _end_trackers(self) -> None:
        """Close the trackers (flushing them). Not `Accelerator.end_training`, which also destroys the process
        group that the caller of a distributed run may still use."""
        accelerator = getattr(self, "accelerator", None)
        if accelerator is None:
            return
        for tracker in accelerator.trackers:
            tracker.finish()
        accelerator.trackers = []

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, Any]:
        """Greedy accuracy on the held-out split with the current adapters."""
        from diffmas.adapters import SolverOnly
        from diffmas.metrics import accuracy

        cfg = self.cfg
        if cfg.data.eval_split is None:
            raise ValueError("the held-out evaluation needs data.eval_split (it is null in this config)")
        items = self.task.load(cfg.data.eval_split)[: cfg.data.n_eval]
        model = self.backbone.model
        model.eval()
        hook = self.method.role_hook
        # upstream agents stay untrained, as they will at inference
        if self.solver_only and hook is None:
            self.method.role_hook = SolverOnly(model, self.roles.solver.name)
        # each rank answers its batches; every rank gets the whole count
        mine = self._answer_counting(items)
        correct = data.gather(mine, self.world)
        solver_only = self.method.role_hook
        if solver_only is not hook and solver_only is not None:
            solver_only(self.roles.solver.name)  # adapters back on for training
            self.method.role_hook = hook
        model.train()
        acc = accuracy(correct)
        return {"eval_accuracy": acc["accuracy"], "eval_n": acc["n"]}

    def _answer_counting(self, items: list[Item]) -> list[bool]:
        """`answer_items` on `items`, one round of batches (a batch per process) at a time, counting the items done
        on `self.progress`. The rounds are cut from the items in `answer_items`' own order (longest first), so
        every batch is the one it would answer in a single call."""
        size, world = self.cfg.run.eval_batch_size, self.world
        order = longest_first(items, self.task, self.method.backbone.tokenizer) if size > 1 else items
        self.progress.eval_start(len(order))
        mine: list[bool] = []
        try:
            for start in range(0, len(order), size * world):
                round_ = order[start : start + size * world]
                mine += answer_items(self.method, self.task, round_, size, self.rank, world)
                self.progress.eval_advance(len(round_))
        finally:
            self.progress.eval_end()
        return mine

    # ------------------------------------------------------------------ saving
    def _manifest(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "method": c.method.train_method,
            "eval_method": self.spec.eval_method,
            "solver_only": self.solver_only,
            "frozen_writer": self.frozen_writer,
            "channel": c.method.channel,
            "adapters": c.lora.adapters,
            "roles": [r.name for r in self.roles.roles],
            "realign": c.method.realign,
            "latent_steps": c.method.latent_steps,
            "grad_mode": c.method.grad_mode,
            "show_prefix": c.method.show_prefix,
            "latent_layer": c.method.latent_layer,
            "base_model": c.model.name,
            "task": c.data.task,
            "step": self.step,
            "config": c.model_dump(),
        }

    def save(self) -> Path:
        """The final adapter directory (`<out>/adapter`), in PEFT format plus our manifest."""
        final = self.out / "adapter"
        if self.accelerator.is_main_process:
            tmp = checkpoints.atomic_dir(final)
            save_adapters(self.backbone.model, tmp, self._manifest(), self.realigner)
            checkpoints.commit_dir(tmp, final)
        self.accelerator.wait_for_everyone()
        return final

    def save_checkpoint(self) -> Path:
        """Write `checkpoints/step-N` (atomically), unless a trainable or optimizer tensor is non-finite: such a
        state must never replace, or push out, the last good checkpoint."""
        final = self.out / "checkpoints" / f"step-{self.step:06d}"
        bad = first_non_finite(self._named_trainable()) or first_non_finite(
            optimizer_tensors(self.optimizer.state_dict())
        )
        if bad:
            raise self._stop(f"non-finite values ({bad}) at step {self.step}, checkpoint not written")
        if self.accelerator.is_main_process:
            checkpoints.write_checkpoint(
                final,
                lambda where: save_adapters(self.backbone.model, where, self._manifest(), self.realigner),
                {n: p.detach().cpu() for n, p in self._named_trainable()},
                self.optimizer,
                self.scheduler,
                {"step": self.step, "position": self.position},
                self.cfg,
            )
            checkpoints.prune(final.parent, self.cfg.run.keep_checkpoints)
        self.accelerator.wait_for_everyone()
        self._last_good = final
        return final

    def _named_trainable(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        yield from ((f"model.{n}", p) for n, p in self.backbone.model.named_parameters() if p.requires_grad)
        if self.realigner is not None:
            yield from (
                (f"realigner.{n}", p) for n, p in self.realigner.named_parameters() if p.requires_grad
            )

    def _checkpoints(self) -> list[Path]:
        """Checkpoint directories, oldest first (`broken-*`, `poisoned-*` and temp dirs are not checkpoints)."""
        return checkpoints.list_checkpoints(self.out / "checkpoints")

    def latest_checkpoint(self) -> Path | None:
        found = self._checkpoints()
        return found[-1] if found else None

    def _resume(self) -> None:
        """Load the checkpoint `setup` chose. One whose tensors do not fit this run (a wrong shape, a missing
        parameter, other optimizer groups) is moved aside like an unreadable one, and the previous one is tried."""
        while self._resume_point is not None:
            ckpt, loaded = self._resume_point
            try:
                checkpoints.restore(ckpt, loaded, self._named_trainable(), self.optimizer, self.scheduler)
                break
            except CheckpointError as e:
                self.console.print(f"[yellow]{e}; falling back to the previous checkpoint[/yellow]")
                self._move_aside(ckpt, "broken")
                self.accelerator.wait_for_everyone()
                self._resume_point = self._usable_checkpoint()
        if self._resume_point is None:
            self.console.print(
                f"[yellow]no usable checkpoint in {self.out / 'checkpoints'}; starting from scratch[/yellow]"
            )
            if self.accelerator.is_main_process and self.metrics_path.exists():
                self.metrics_path.unlink()  # rows of the checkpoints given up on
            return
        state = loaded["state"]
        self.step, self.position = state["step"], state["position"]
        self._last_good = ckpt
        if self.accelerator.is_main_process:
            checkpoints.truncate_metrics(self.metrics_path, self.step)
        self.console.print(f"resumed from {ckpt} (step {self.step})")
        before = loaded["config"].optim.steps
        if before != self.cfg.optim.steps:
            lr = self._follow_new_budget()
            self.console.print(
                f"optim.steps {before} -> {self.cfg.optim.steps}: the {self.cfg.optim.schedule} learning-rate "
                f"schedule now spans {self.cfg.optim.steps} steps (lr {lr:.4g} at step {self.step + 1})",
                soft_wrap=True,
            )

    def _follow_new_budget(self) -> float:
        """After resuming with another `optim.steps`: the schedule is the one of the new total (the scheduler was
        built from it; its state holds only the step count), and the optimizer's learning rates, which the
        checkpoint saved under the old total, are set to that schedule's at this step. Returns the first rate."""
        sched = self.scheduler
        rates = [
            base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas, strict=True)
        ]
        for group, lr in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = lr
        sched._last_lr = list(rates)
        return rates[0]
