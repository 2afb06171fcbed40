"""The LLM text embedder: LM body -> pooled hidden state -> MLP -> L2 norm.

Pooling is what the base checkpoint says (:func:`checkpoint_pooling`): a causal LM (and any checkpoint without a
sentence-transformers pooling config) is read at the trailing ``<emb>`` token. Inputs are right-padded (see
:mod:`larr.tokenization`), so that token of row ``b`` sits at ``attention_mask[b].sum() - 1``; a causal
model's state there has read the whole text and no padding. A bidirectional encoder shipped with a
sentence-transformers ``1_Pooling/config.json`` (all-MiniLM-L6-v2: mean over tokens) is pooled that way, with the
input template it was trained with (:func:`input_template`).

On disk (``save_pretrained``)::

    DIR/encoder/            Hugging Face base model (safetensors), e.g. LlamaModel
    DIR/projection.safetensors
    DIR/embedder.json       {"hidden_size": H, "projection_dim": D | null, "pooling": "last_token" | "mean" | "cls"}
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

from larr.choices import ChoiceEnum
from larr.errors import ConfigError
from larr.text import EMB_TOKEN
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer

EMBEDDER_FILE = "embedder.json"
PROJECTION_FILE = "projection.safetensors"
ENCODER_DIR = "encoder"
# sentence-transformers' pooling module config inside a checkpoint folder; stage 1 copies it to the folders it
# writes, so every later stage reads the base's pooling from the LM folder it starts from
POOLING_CONFIG = Path("1_Pooling") / "config.json"


class Pooling(ChoiceEnum):
    """How token states become one text vector."""

    LAST_TOKEN = "last_token"  # the state at the appended last token (<emb>); a causal LM's only choice
    MEAN = "mean"  # the mean over real (attention_mask = 1) tokens: sentence-transformers' pooling_mode_mean_tokens
    CLS = "cls"  # the state at the first token: pooling_mode_cls_token

    @classmethod
    def choice_name(cls) -> str:
        return "pooling"


# sentence-transformers pooling-config key -> ours; its other modes (max, mean_sqrt_len, weighted) are not built
_SENTENCE_TRANSFORMERS_MODES = {"pooling_mode_mean_tokens": Pooling.MEAN, "pooling_mode_cls_token": Pooling.CLS}


def checkpoint_pooling(lm_dir: str | Path) -> Pooling:
    """The pooling an HF checkpoint folder asks for: its ``1_Pooling/config.json`` if present, else the last token."""
    path = Path(lm_dir) / POOLING_CONFIG
    if not path.exists():
        return Pooling.LAST_TOKEN
    modes = {key for key, on in json.loads(path.read_text(encoding="utf-8")).items() if key.startswith("pooling_mode") and on}
    known = [mode for key, mode in _SENTENCE_TRANSFORMERS_MODES.items() if key in modes]
    if len(known) != 1 or len(modes) != 1:
        raise ConfigError(f"{path}: pooling modes {sorted(modes)}; supported: exactly one of {sorted(_SENTENCE_TRANSFORMERS_MODES)}")
    return known[0]


def input_template(pooling: Pooling, tokenizer) -> dict[str, str | None]:
    """``EmbeddingInputConfig`` first/last tokens for ``pooling`` (``tokenizer``: the HF tokenizer of the LM).

    Last-token pooling reads the appended ``<emb>``; mean or CLS pooling keeps the base's own sentence template
    (``[CLS] text [SEP]`` for BERT), so the frozen base embeds a text exactly as sentence-transformers does.
    """
    if pooling is Pooling.LAST_TOKEN:
        return {"first_token": None, "last_token": EMB_TOKEN}
    if tokenizer.cls_token is None or tokenizer.sep_token is None:
        raise ConfigError(f"{pooling} pooling needs a tokenizer with a CLS and a SEP token (a BERT-style encoder)")
    return {"first_token": tokenizer.cls_token, "last_token": tokenizer.sep_token}


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, H), attention_mask (B, T) right-padded -> (B, H): the state at the last real token."""
    last = (attention_mask.sum(dim=1) - 1).clamp(min=0)  # (B,)
    index = last.view(-1, 1, 1).expand(-1, 1, hidden.size(-1))  # (B, 1, H)
    return hidden.gather(1, index).squeeze(1)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, H), attention_mask (B, T) -> (B, H): the mean of the real tokens' states."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """hidden (B, T, H) -> (B, H) as ``pooling`` says."""
    if pooling is Pooling.MEAN:
        return mean_pool(hidden, attention_mask)
    if pooling is Pooling.CLS:
        return hidden[:, 0]
    return last_token_pool(hidden, attention_mask)


class TextEmbedder(nn.Module):
    """``(input_ids, attention_mask) (B, T) -> (B, D)`` unit-norm text embeddings.

    ``projection_dim=None`` skips the MLP (the stage-1 model "with the same pooling", and the
    no-stage-2 ablation); then D = H.
    """

    def __init__(self, encoder: PreTrainedModel, projection_dim: int | None, pooling: Pooling = Pooling.LAST_TOKEN):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.hidden_size = hidden
        self.projection_dim = projection_dim
        self.pooling = Pooling.parse(pooling)
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
        pooled = pool(hidden, attention_mask, self.pooling)  # (B, H)
        return self.projection(pooled)

    # ------------------------------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | Path, tokenizer, input_config: EmbeddingInputConfig) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / ENCODER_DIR, safe_serialization=True)
        if self.projection_dim is not None:
            save_file({k: v.contiguous() for k, v in self.projection.state_dict().items()}, directory / PROJECTION_FILE)
        meta = {"hidden_size": self.hidden_size, "projection_dim": self.projection_dim, "pooling": self.pooling.value}
        (directory / EMBEDDER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(directory)
        input_config.save(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **model_kwargs) -> "TextEmbedder":
        directory = Path(directory)
        meta = json.loads((directory / EMBEDDER_FILE).read_text(encoding="utf-8"))
        encoder = AutoModel.from_pretrained(directory / ENCODER_DIR, local_files_only=True, **model_kwargs)
        # folders written before pooling was recorded are last-token pooled
        embedder = cls(encoder, meta["projection_dim"], meta.get("pooling", Pooling.LAST_TOKEN))
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
