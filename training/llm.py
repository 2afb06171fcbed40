"""The LLM and its tokenizer: a local Hugging Face checkpoint, or the tiny default built from scratch.

Nothing is downloaded: ``--base-model`` must be a local folder (``HF_HUB_OFFLINE`` is forced on).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from larr.errors import MissingInputError
from larr.text import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, special_tokens
from larr.training.config import ModelConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int, scene_features: Sequence[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the corpus; the project's special tokens get the first ids."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens(scene_features),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=[t for t in special_tokens(scene_features) if t not in {BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN}],
    )


def build_tiny_model(config: ModelConfig, tokenizer: PreTrainedTokenizerFast):
    """A from-scratch Llama- or Qwen2-style causal LM sized by ``config`` (random init)."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if config.architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if config.architecture == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown architecture '{config.architecture}' (llama | qwen2)")


def load_base_model(path: str | Path, scene_features: Sequence[str]):
    """A local HF causal LM with the project's special tokens added and the embeddings resized."""
    path = Path(path)
    if not path.is_dir():
        raise MissingInputError(f"--base-model {path}: not a local folder (nothing is downloaded)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(f"{path}: needs a fast tokenizer (tokenizer.json); the server tokenises with `tokenizers`")
    extra = [t for t in special_tokens(scene_features) if t not in tokenizer.get_vocab()]
    tokenizer.add_special_tokens({"additional_special_tokens": extra}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer
