"""Embedder tokenisation without torch: the one function that turns texts into ``input_ids``/``attention_mask``.

Training (stage 2/3 and export parity) and the Triton feature cache both call :class:`EmbeddingTokenizer`,
so a text is tokenised identically everywhere. Inputs are right-padded and always end in ``last_token``
(``<emb>`` unless the config names another; texts longer than ``max_length`` are truncated *before* it), so a
last-token embedder reads the hidden state at position ``attention_mask.sum(-1) - 1``. A mean-pooled encoder base
(all-MiniLM-L6-v2) keeps the template it was trained with instead: ``first_token`` ``[CLS]``, ``last_token``
``[SEP]`` (``larr.models.embedder.input_template``). Any padding or truncation a tokenizer file carries (BERT
checkpoints pad to 128) is switched off: padding is done here, to the batch's longest row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from larr.contract import EMBEDDING_CONFIG_FILE, TOKENIZER_FILE
from larr.text import EMB_TOKEN, PAD_TOKEN

# A token is at least one character, so reading more than this many characters per token of budget
# cannot change the result; it keeps a 100,000-character request from costing a full tokenisation.
_CHARS_PER_TOKEN_BOUND = 32
# Tokens per embedder input, <emb> included: stage 2's default (``embed.max_length``). A trained embedder
# carries its own value in embedding_config.json, so changing this changes only new trainings.
DEFAULT_MAX_LENGTH = 48


@dataclass(frozen=True)
class EmbeddingInputConfig:
    """How embedder inputs are built; saved next to the tokenizer as ``embedding_config.json``."""

    max_length: int = DEFAULT_MAX_LENGTH  # tokens per text including first_token and last_token
    pad_to_multiple_of: int = 8  # fewer distinct shapes for ONNX Runtime / TensorRT and Triton batching
    first_token: str | None = None  # put before every text (None: nothing; "[CLS]" for a mean-pooled BERT base)
    last_token: str = EMB_TOKEN  # put after every text; a last-token embedder's output is its hidden state

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / EMBEDDING_CONFIG_FILE
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> "EmbeddingInputConfig":
        path = Path(directory) / EMBEDDING_CONFIG_FILE
        return cls(**json.loads(path.read_text(encoding="utf-8")))


class EmbeddingTokenizer:
    """``texts -> (input_ids, attention_mask)``, both ``(B, T)`` int64, right-padded, ``<emb>`` last."""

    def __init__(self, tokenizer: Tokenizer, config: EmbeddingInputConfig):
        self.first_ids = [] if config.first_token is None else [self._token_id(tokenizer, config.first_token)]
        if config.max_length < len(self.first_ids) + 2:
            raise ValueError(f"max_length must leave room for one text token, got {config.max_length}")
        tokenizer.no_padding()  # rows are padded below, to the batch's longest (a BERT file pads to 128)
        self.tokenizer = tokenizer
        self.config = config
        # cut to the text's budget inside the tokenizer (a BERT file's own limit is 128): without a limit, a text
        # of max_text_chars encodes to every one of its tokens first, which costs the serving stub ~16 MiB of RSS
        tokenizer.enable_truncation(max_length=self.text_budget)
        self.last_id = self._token_id(tokenizer, config.last_token)
        self.pad_id = self._token_id(tokenizer, PAD_TOKEN)

    @staticmethod
    def _token_id(tokenizer: Tokenizer, token: str) -> int:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the tokenizer has no {token} token; was it built by `larr train pretrain`?")
        return token_id

    @classmethod
    def from_directory(cls, directory: str | Path, **changes) -> "EmbeddingTokenizer":
        """The tokenizer saved in ``directory``; ``changes`` replace fields of its input config (e.g.
        ``pad_to_multiple_of=1`` where every width is allowed)."""
        directory = Path(directory)
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        return cls(tokenizer, replace(EmbeddingInputConfig.load(directory), **changes))

    @property
    def max_text_chars(self) -> int:
        """Characters of a text that can reach the model; the rest is cut before tokenising."""
        return self.text_budget * _CHARS_PER_TOKEN_BOUND

    @property
    def text_budget(self) -> int:
        """Tokens of the text itself: ``max_length`` less the first and last token."""
        return self.config.max_length - len(self.first_ids) - 1

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded ids per text: ``first_token`` (if any), the text cut to its budget, ``last_token``."""
        budget = self.text_budget
        clipped = [text[: self.max_text_chars] for text in texts]
        encodings = self.tokenizer.encode_batch(clipped, add_special_tokens=False)
        return [self.first_ids + encoding.ids[:budget] + [self.last_id] for encoding in encodings]

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if len(texts) == 0:
            raise ValueError("no texts to tokenise")
        rows = self.token_ids(texts)
        longest = max(len(ids) for ids in rows)
        multiple = self.config.pad_to_multiple_of
        width = min(self.config.max_length, -(-longest // multiple) * multiple)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)  # (B, T)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask
