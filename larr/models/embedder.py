"""The LLM text embedder: causal LM body -> hidden state at the trailing ``<emb>`` token -> MLP -> L2 norm.

Inputs are right-padded (see :mod:`larr.tokenization`), so the ``<emb>`` token of row ``b`` sits at
``attention_mask[b].sum() - 1``; a causal model's state there has read the whole text and no padding.

On disk (``save_pretrained``)::

    DIR/encoder/            Hugging Face base model (safetensors), e.g. LlamaModel
    DIR/projection.safetensors
    DIR/embedder.json       {"hidden_size": H, "projection_dim": D | null}
    DIR/tokenizer.json …    the tokenizer, plus embedding_config.json (max_length, padding multiple)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, PreTrainedModel

from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer

EMBEDDER_FILE = "embedder.json"
PROJECTION_FILE = "projection.safetensors"
ENCODER_DIR = "encoder"


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, H), attention_mask (B, T) right-padded -> (B, H): the state at the last real token."""
    last = (attention_mask.sum(dim=1) - 1).clamp(min=0)  # (B,)
    index = last.view(-1, 1, 1).expand(-1, 1, hidden.size(-1))  # (B, 1, H)
    return hidden.gather(1, index).squeeze(1)


class TextEmbedder(nn.Module):
    """``(input_ids, attention_mask) (B, T) -> (B, D)`` unit-norm text embeddings.

    ``projection_dim=None`` skips the MLP (the stage-1 model "with the same pooling", and the
    no-stage-2 ablation); then D = H.
    """

    def __init__(self, encoder: PreTrainedModel, projection_dim: int | None):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.hidden_size = hidden
        self.projection_dim = projection_dim
        if projection_dim is None:
            self.projection = nn.Identity()
        else:
            self.projection = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, projection_dim))

    @property
    def output_dim(self) -> int:
        return self.projection_dim or self.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(input_ids, attention_mask), dim=-1)  # (B, D)

    def project(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The embedding before the L2 norm, (B, D): what a distillation loss that also matches lengths compares."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        pooled = last_token_pool(hidden, attention_mask)  # (B, H)
        return self.projection(pooled)

    # ------------------------------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | Path, tokenizer, input_config: EmbeddingInputConfig) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / ENCODER_DIR, safe_serialization=True)
        if self.projection_dim is not None:
            save_file({k: v.contiguous() for k, v in self.projection.state_dict().items()}, directory / PROJECTION_FILE)
        meta = {"hidden_size": self.hidden_size, "projection_dim": self.projection_dim}
        (directory / EMBEDDER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(directory)
        input_config.save(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **model_kwargs) -> "TextEmbedder":
        directory = Path(directory)
        meta = json.loads((directory / EMBEDDER_FILE).read_text(encoding="utf-8"))
        encoder = AutoModel.from_pretrained(directory / ENCODER_DIR, local_files_only=True, **model_kwargs)
        embedder = cls(encoder, meta["projection_dim"])
        if meta["projection_dim"] is not None:
            embedder.projection.load_state_dict(load_file(directory / PROJECTION_FILE))
        return embedder.eval()


@torch.no_grad()
def embed_texts(
    embedder: TextEmbedder,
    tokenizer: EmbeddingTokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    desc: str | None = None,
) -> np.ndarray:
    """Embed many texts (eval mode, no grad), shortest first so padding stays small. Returns (N, D) float32."""
    was_training = embedder.training
    embedder.eval()
    lengths = np.array([len(t) for t in texts])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), embedder.output_dim), dtype=np.float32)
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, dynamic_ncols=True):
        rows = order[start : start + batch_size]
        input_ids, attention_mask = tokenizer([texts[i] for i in rows])
        vectors = embedder(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        out[rows] = vectors.float().numpy()
    embedder.train(was_training)
    return out
