"""The trained tiny run in-process (PyTorch), what the adapters' answers are checked against.

``reference`` (module scope) is a :class:`TrainedModels`: the stage-2 ``TextEmbedder`` with its tokenizer, and
the ``larr`` CTR model as ``ServingCTR`` with the dataset's id ranges -- the modules ``larr export`` starts from,
run here without ONNX, Triton or the adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from larr.data.schema import Dataset, load_dataset
from larr.models.ctr_model import LarrCTR, ServingCTR, index_table
from larr.models.embedder import TextEmbedder, embed_texts
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer


@dataclass(frozen=True)
class TrainedModels:
    embedder: TextEmbedder
    tokenizer: EmbeddingTokenizer
    ctr: ServingCTR
    scene_values: tuple[list, ...]  # (K,): per scene feature, the CTR model's field values (index i+1 = values[i])
    dataset: Dataset  # the test split

    @property
    def features(self) -> tuple[str, ...]:
        return self.dataset.info.scene_features

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(M, D): each text as given (already formatted with its feature tag)."""
        return embed_texts(self.embedder, self.tokenizer, list(texts))

    def embed_scene(self, scene: Sequence[str]) -> np.ndarray:
        """(K, D): each scene feature's text embedded on its own, as the feature cache embeds it."""
        return self.embed([format_scene_feature(f, t) for f, t in zip(self.features, scene)])

    def scene_ids(self, scene: Sequence[str]) -> np.ndarray:
        """(K,) the CTR model's field index of each scene text, 0 for a text it never saw."""
        return np.array([values.index(t) + 1 if t in values else 0 for values, t in zip(self.scene_values, scene)],
                        dtype=np.int64)

    def score(self, scene_emb: np.ndarray, scene_ids: np.ndarray, user: int, items: Sequence[int]) -> np.ndarray:
        """(N,) CTR of one request from its (K, D) scene embeddings and (K,) scene ids."""
        with torch.no_grad():
            return self.ctr(torch.from_numpy(scene_emb), torch.from_numpy(scene_ids), torch.tensor([user]),
                            torch.tensor(list(items))).numpy()


@pytest.fixture(scope="module")
def reference(tiny_run) -> TrainedModels:
    dataset = load_dataset(tiny_run.data_dir, splits=("test",))
    model, vocab = LarrCTR.load(tiny_run.ctr_dir("larr"))
    serving = ServingCTR(model, index_table(vocab["values"][0], dataset.info.num_users),
                         index_table(vocab["values"][1], dataset.info.num_items)).eval()
    return TrainedModels(TextEmbedder.from_pretrained(tiny_run.embedder_dir),
                         EmbeddingTokenizer.from_directory(tiny_run.embedder_dir), serving,
                         tuple(vocab["values"][2:]), dataset)  # fields: user, item, then the scene features
