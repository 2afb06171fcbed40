"""The full-text baseline's first step (``fulltext_embed``), importable and tested without Triton.

The baseline is what LARR avoids: per request, the LLM reads the whole scene as one text
(``larr.text.format_scene``), with no cache. The Triton adapter (``benchmarks/adapters/fulltext_embed``)
handles many requests per execute() and sends their texts to the embedder in one BLS call::

    scenes = FullTextScenes.from_directory(version_dir, scene_features)
    parsed = [scenes.parse(texts) for texts in requests]       # errors stay per request
    texts = scenes.texts(parsed)                               # one whole-scene text per valid request
    input_ids, attention_mask = scenes.tokenize(texts)         # (M, T) each
    results = scenes.results(parsed, embed(input_ids, attention_mask))   # per request: outputs or error

Requests are validated exactly as the feature cache validates them (the same function,
``larr.serving.feature_cache.parse_scene``), so both ensembles accept and refuse the same inputs.
Outputs: ``SCENE_EMB`` (1, D) -- the full-text CTR head reads one scene embedding (K' = 1) -- and
``SCENE_IDS`` (K,), the scene features' field indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from larr.contract import SCENE_VOCAB_FILE
from larr.serving.errors import RequestError
from larr.serving.feature_cache import Parsed, SceneVocab, parse_scene
from larr.text import format_scene
from larr.tokenization import EmbeddingTokenizer


class FullTextScenes:
    """Whole-scene texts for the full-text baseline: validation, formatting, tokenisation, outputs."""

    def __init__(self, scene_features: Sequence[str], tokenizer: EmbeddingTokenizer, vocab: SceneVocab):
        if tuple(vocab.features) != tuple(scene_features):
            raise ValueError(f"scene vocab fields {vocab.features} differ from the schema {tuple(scene_features)}")
        self.scene_features = tuple(scene_features)
        self.tokenizer = tokenizer
        self.vocab = vocab

    @classmethod
    def from_directory(cls, directory: str | Path, scene_features: Sequence[str]) -> "FullTextScenes":
        """From a version folder with ``tokenizer.json``, ``embedding_config.json`` (the whole-scene
        ``max_length``) and ``scene_vocab.json``."""
        directory = Path(directory)
        tokenizer = EmbeddingTokenizer.from_directory(directory)
        return cls(scene_features, tokenizer, SceneVocab.load(directory / SCENE_VOCAB_FILE))

    def parse(self, raw: np.ndarray | Sequence) -> Parsed:
        """One request's ``SCENE_TEXT`` (K,) -> its texts, or the error to send back."""
        return parse_scene(raw, self.scene_features)

    def texts(self, parsed: Sequence[Parsed]) -> list[str]:
        """The whole-scene text of every valid request, in request order (errors skipped)."""
        return [format_scene(self.scene_features, texts) for texts in parsed if not isinstance(texts, RequestError)]

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.tokenizer(texts)  # (M, T) int64 each

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens the embedder reads per text, ``<emb>`` included (what the benchmark reports)."""
        return [len(ids) for ids in self.tokenizer.token_ids(texts)]

    def results(
        self, parsed: Sequence[Parsed], embeddings: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray] | RequestError]:
        """Per request: ``(SCENE_EMB (1, D) float32, SCENE_IDS (K,) int64)`` or its RequestError.

        ``embeddings`` (M, D) holds one row per valid request, in order (None when none was valid).
        """
        valid = sum(not isinstance(p, RequestError) for p in parsed)
        rows = 0 if embeddings is None else len(embeddings)
        if rows != valid or (embeddings is not None and embeddings.ndim != 2):
            shape = None if embeddings is None else embeddings.shape
            raise RuntimeError(f"embedder returned {shape} for {valid} scene texts")
        out: list[tuple[np.ndarray, np.ndarray] | RequestError] = []
        row = 0
        for texts in parsed:
            if isinstance(texts, RequestError):
                out.append(texts)
                continue
            scene_emb = np.asarray(embeddings[row : row + 1], dtype=np.float32)  # (1, D)
            out.append((scene_emb, self.vocab.ids(texts)))
            row += 1
        return out
