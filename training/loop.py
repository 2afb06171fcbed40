"""What every training stage shares: (optional) DDP, deterministic batches, atomic checkpoints, step logs.

Determinism is by construction: the batch of step ``s`` and the dropout seed of step ``s`` are functions
of ``(seed, s)`` only, so a run resumed from the checkpoint of step ``s`` computes exactly the same step
``s + 1`` as the uninterrupted run. Under ``torchrun --nproc_per_node 2`` (gloo on CPU) each rank takes
an interleaved shard of the same global batch, and in-batch negatives are gathered over the ranks, so two
processes train the loss one process trains on the same global batch (tests/unit/training/test_runs.py
compares the loss curves). Model dropout is the exception: each rank draws its own shard's masks, so with
dropout the two agree in distribution, not step by step. Rank 0 alone writes checkpoints, logs and metrics.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather as differentiable_all_gather
from tqdm.auto import tqdm

from larr.errors import ConfigError

CHECKPOINT_FILE = "checkpoint.pt"


# --------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's interleaved share of a global batch. Shares must be equal: DDP averages the ranks'
        gradients with equal weight, which is the global batch's mean gradient only then."""
        if len(indices) % self.world_size:
            raise ConfigError(f"a global batch of {len(indices)} rows does not split evenly over {self.world_size} "
                              "ranks: choose a batch_size divisible by --nproc_per_node")
        return indices[self.rank :: self.world_size]

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's share of a global batch, back in global order: (b, ...) -> (world_size * b, ...).

        In-batch negatives (InfoNCE) must span the global batch, or DDP trains a different loss than one
        process does (each rank would see 1/world_size of the negatives). The gather is differentiable:
        its backward sums every rank's gradient of the (identical) global loss for this rank's rows, i.e.
        world_size times the gradient, which DDP's mean over ranks then cancels.
        """
        if not self.enabled:
            return rows
        parts = differentiable_all_gather(rows)  # world_size x (b, ...), part r = rank r's rows
        return torch.stack(parts, dim=1).flatten(0, 1)  # row i * world_size + r = part r's row i: undoes shard()

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value


def init_distributed() -> DistContext:
    """Join the process group torchrun set up (gloo: CPU), or run as a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def wrap_ddp(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    return torch.nn.parallel.DistributedDataParallel(model)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------- batches


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of global batch ``step``: walks seeded per-epoch permutations, wrapping across epochs."""
    if num_examples <= 0:
        raise ValueError("cannot draw batches from an empty dataset")
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_examples)
        order = np.random.default_rng((seed, epoch)).permutation(num_examples)
        out.extend(order[offset : offset + batch_size - len(out)].tolist())
    return np.asarray(out, dtype=np.int64)


def seed_step(seed: int, step: int) -> None:
    """Seed torch's RNG (dropout) from (seed, step) so a resumed step draws the same randomness."""
    torch.manual_seed(seed * 1_000_003 + step)


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Learning rate of ``step`` for stages 1 and 2: linear warmup, then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    done = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))


# --------------------------------------------------------------------------------------------- checkpoints


def atomic_torch_save(obj: object, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a kill mid-save keeps the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(directory: Path, step: int, model: torch.nn.Module, optimizer, extra: dict | None = None) -> None:
    state = {
        "step": step,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "extra": extra or {},
    }
    atomic_torch_save(state, Path(directory) / CHECKPOINT_FILE)


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer) -> tuple[int, dict]:
    """Restore model and optimizer; returns (step, extra). Raises FileNotFoundError when absent."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    state = torch.load(path, map_location="cpu", weights_only=False)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), state["extra"]


# --------------------------------------------------------------------------------------------- logging


class StepLogger:
    """Per-step metrics as CSV (``steps.csv``) on rank 0, appended across resumes."""

    def __init__(self, directory: Path, ctx: DistContext, resume_from_step: int = 0):
        self.ctx = ctx
        self.path = Path(directory) / "steps.csv"
        self._fields: list[str] | None = None
        if ctx.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if ctx.is_main and self.path.exists() and resume_from_step > 0:
            # drop rows after the resumed step (they belong to the interrupted run)
            with self.path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            kept = [r for r in rows if int(r["step"]) <= resume_from_step]
            if rows:
                self._fields = list(rows[0].keys())
                with self.path.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=self._fields)
                    writer.writeheader()
                    writer.writerows(kept)
        elif ctx.is_main and self.path.exists():
            self.path.unlink()

    def log(self, step: int, **values: float) -> None:
        if not self.ctx.is_main:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: float(v) for k, v in values.items()}}
        new = self._fields is None
        if new:
            self._fields = list(row.keys())
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._fields, extrasaction="ignore")
            if new and handle.tell() == 0:
                writer.writeheader()
            writer.writerow(row)


def progress(total: int, initial: int, desc: str, ctx: DistContext):
    return tqdm(total=total, initial=initial, desc=desc, disable=not ctx.is_main, dynamic_ncols=True)


def update_metrics_json(path: Path, section: str, value: dict) -> None:
    """Merge ``{section: value}`` into ``metrics.json`` (atomic)."""
    path = Path(path)
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[section] = value
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
