"""The AUC cost of ``fresh_text_policy`` async: the test split replayed in time order, offline.

    python benchmarks/studies/fresh-text-replay/fresh_text_replay.py --run runs/tiny                   # delay 64 requests
    python benchmarks/studies/fresh-text-replay/fresh_text_replay.py --run runs/tiny --delay 0 --delay 64 --delay 1024 --out replay.json

The scene store starts with what the offline scene table holds: every (feature, text) of the TRAIN
split. Each test row is one request (user, item, K scene texts), replayed in ``timestamp`` order (the
dataset's column; file order among equal stamps, and file order throughout when a row has none):

* ``strict``: a text the store lacks is embedded before its request is scored, so every request sees
  every real vector -- the served model's plain test AUC.
* ``async``: a text the store lacks is scored with the unseen-text row (zeros,
  :data:`larr.contract.UNSEEN_SCENE_FILL`) until it is in the store, which is ``delay`` requests after
  the first request that needed it (its background batch, larr.serving.fresh_text). Requests in between
  that need it fall back too; ``delay`` 0 is strict.

Reports both AUCs, their difference, and the share of lookups (request x feature) that fell back. No
Triton: the trained files through larr.models (TextEmbedder, LarrCTR). The embedder is deterministic,
so every distinct text is embedded once up front; the modes differ only in which requests see a vector.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from larr.contract import UNSEEN_SCENE_FILL
from larr.data.schema import Interactions, load_dataset
from larr.layout import RunLayout, Variant
from larr.models.ctr_model import LarrCTR
from larr.models.embedder import TextEmbedder, embed_texts
from larr.models.field_vocab import FieldVocab
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer
from larr.training.metrics import auc

DEFAULT_DELAY = 64  # requests: about one background batch (embedder_max_batch texts) at a steady miss rate


@dataclass(frozen=True)
class ReplayResult:
    """One replay: the async mode at ``delay`` against strict, on the same requests in the same order."""

    variant: str
    delay: int  # requests between a text's first miss and its vector in the store
    order: str  # "timestamp" or "row order" (the test split has rows without a timestamp)
    requests: int  # test rows
    lookups: int  # requests x scene features
    store_misses: float  # share of lookups whose text is not among the TRAIN split's (what strict embeds inline)
    fallback_fraction: float  # share of lookups async answered with the unseen-text row
    strict_auc: float
    async_auc: float

    @property
    def auc_delta(self) -> float:
        """async - strict (negative: what answering fresh texts with zeros costs)."""
        return self.async_auc - self.strict_auc

    def to_dict(self) -> dict:
        return {**asdict(self), "auc_delta": self.auc_delta}


def replay_order(timestamps: np.ndarray) -> tuple[np.ndarray, str]:
    """(N,) int64 stamps (-1 = none) -> the request order: by stamp, stable; file order if any is missing."""
    if len(timestamps) and (timestamps < 0).any():
        return np.arange(len(timestamps)), "row order"
    return np.argsort(timestamps, kind="stable"), "timestamp"


def fallback_mask(codes: np.ndarray, known: np.ndarray, delay: int) -> np.ndarray:
    """Which lookups the async policy answers with the unseen-text row.

    codes (N, K) int64: each request's text ids, requests in replay order; known (V,) bool: the text is in
    the store at the start. A text the store lacks is stored ``delay`` requests after the first request
    that needs it: request i falls back on it while ``i < first + delay``. Returns (N, K) bool.
    """
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    n, k = codes.shape
    first = np.full(len(known), n, dtype=np.int64)  # (V,) first request that needs each text
    np.minimum.at(first, codes.reshape(-1), np.repeat(np.arange(n), k))
    return ~known[codes] & (np.arange(n)[:, None] < first[codes] + delay)


class ReplayModel:
    """The trained run's frozen embedder and CTR model, loaded from its files (:class:`RunLayout`), and the
    dataset its ``config.yaml`` names."""

    def __init__(self, run: Path, variant: Variant | str = Variant.LARR, data: Path | None = None):
        layout = RunLayout(Path(run))
        self.variant = Variant.parse(variant)
        if not self.variant.uses_llm or self.variant.whole_scene:
            raise ValueError(f"variant {self.variant.value!r} has no per-feature scene embeddings to fall back on")
        self.model, vocab = LarrCTR.load(layout.ctr_dir(self.variant))
        self.vocab = FieldVocab.from_dict(vocab)
        self.embedder = TextEmbedder.from_pretrained(layout.embedder_dir(self.variant)).eval()
        self.tokenizer = EmbeddingTokenizer.from_directory(layout.embedder_dir(self.variant))
        if data is None:
            data = layout.dataset_dir()
            if data is None:
                raise FileNotFoundError(f"{layout.config_file}: names no dataset that exists; pass --data")
        self.dataset = load_dataset(data)

    def scene_codes(self, splits: Sequence[Interactions]) -> tuple[list[np.ndarray], list[str]]:
        """Per split its (N, K) text ids, and the distinct embedder input texts ((feature, text) formatted)."""
        features = self.dataset.info.scene_features
        index: dict[str, int] = {}
        codes = []
        for rows in splits:
            columns = [[index.setdefault(format_scene_feature(f, t), len(index)) for t in rows.scene[k]]
                       for k, f in enumerate(features)]
            codes.append(np.array(columns, dtype=np.int64).T.reshape(len(rows), len(features)))  # (N, K)
        return codes, list(index)

    @torch.no_grad()
    def score(self, rows: Interactions, codes: np.ndarray, table: torch.Tensor, unseen: np.ndarray,
              batch_size: int = 2048) -> np.ndarray:
        """Click probabilities (N,) of ``rows`` with scene embeddings ``table[codes]`` (N, K, D), the
        lookups marked in ``unseen`` (N, K) replaced by the unseen-text row."""
        sparse = torch.from_numpy(self.vocab.transform([rows.user_id, rows.item_id, *rows.scene]))  # (N, F)
        item_rows = torch.from_numpy(rows.item_id + 1)  # (N,) row of item_text, 0 = unknown
        codes_t, unseen_t = torch.from_numpy(codes), torch.from_numpy(unseen)
        out = []
        for start in range(0, len(rows), batch_size):
            part = slice(start, start + batch_size)
            scene = table[codes_t[part]].masked_fill(unseen_t[part, :, None], UNSEEN_SCENE_FILL)  # (B, K, D)
            out.append(torch.sigmoid(self.model(sparse[part], scene, item_rows[part]).logits).numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def replay(model: ReplayModel, delays: Sequence[int] = (DEFAULT_DELAY,), embed_batch_size: int = 256) -> list[ReplayResult]:
    """Strict and async (one per delay) on the test split, store pre-filled with the train split's texts."""
    train, test = model.dataset.train, model.dataset.test
    order, order_name = replay_order(test.timestamp)
    test = test.subset(order)
    (train_codes, test_codes), texts = model.scene_codes([train, test])
    table = torch.from_numpy(embed_texts(model.embedder, model.tokenizer, texts, embed_batch_size))  # (V, D)
    known = np.zeros(len(texts), dtype=bool)
    known[train_codes.reshape(-1)] = True
    labels = test.label
    strict_unseen = np.zeros(test_codes.shape, dtype=bool)
    strict_auc = auc(labels, model.score(test, test_codes, table, strict_unseen))
    results = []
    for delay in delays:
        unseen = fallback_mask(test_codes, known, delay)
        results.append(ReplayResult(
            variant=model.variant.value,
            delay=int(delay),
            order=order_name,
            requests=len(test),
            lookups=int(test_codes.size),
            store_misses=float((~known[test_codes]).mean()) if test_codes.size else 0.0,
            fallback_fraction=float(unseen.mean()) if unseen.size else 0.0,
            strict_auc=float(strict_auc),
            async_auc=float(auc(labels, model.score(test, test_codes, table, unseen))),
        ))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/fresh-text-replay/fresh_text_replay.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="run folder of `larr train` (embed/, ctr/, config.yaml)")
    parser.add_argument("--variant", default=Variant.LARR.value, help="CTR model under RUN/ctr/ (per-feature scene embeddings)")
    parser.add_argument("--data", type=Path, help="dataset folder (default: the one RUN/config.yaml names)")
    parser.add_argument("--delay", type=int, action="append",
                        help=f"requests until a missed text is in the store (repeatable; default {DEFAULT_DELAY})")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        results = replay(ReplayModel(args.run, args.variant, args.data), args.delay or [DEFAULT_DELAY])
    except (FileNotFoundError, ValueError) as error:
        print(f"fresh_text_replay: {error}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r.variant}  delay {r.delay:>5} requests  ({r.requests} test requests in {r.order}, "
              f"{r.store_misses:.2%} of lookups not in the train-filled store)\n"
              f"  strict AUC {r.strict_auc:.5f}   async AUC {r.async_auc:.5f}   delta {r.auc_delta:+.5f}   "
              f"fell back {r.fallback_fraction:.2%} of lookups")
    if args.out:
        args.out.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
