"""The LLM and its tokenizer: a local Hugging Face checkpoint, or the tiny default built from scratch.

Nothing is downloaded: ``--base-model`` is a local folder or the name of a packaged base (``minilm``,
:mod:`larr.training.packaged_base`); ``HF_HUB_OFFLINE`` is forced on. A base is either a causal LM (stage 1:
next-token loss, embedder: last-token pooling) or a bidirectional encoder such as BERT (stage 1: masked-LM loss,
embedder: the pooling its sentence-transformers config names, :func:`larr.models.embedder.checkpoint_pooling`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from larr.choices import ChoiceEnum
from larr.errors import ConfigError
from larr.models.embedder import POOLING_CONFIG
from larr.text import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, special_tokens
from larr.training.config import ModelConfig
from larr.training.packaged_base import resolve_base_model

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


class BaseKind(ChoiceEnum):
    """What stage 1 trains a base with: next-token loss (causal) or masked-LM loss (bidirectional encoder)."""

    CAUSAL = "causal"
    ENCODER = "encoder"


def base_kind(path: str | Path) -> BaseKind:
    """An HF folder's kind: an encoder when its model type has a masked-LM head and it is not set up as a decoder."""
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return BaseKind.ENCODER
    return BaseKind.CAUSAL


def document_separator(tokenizer: PreTrainedTokenizerFast, kind: BaseKind) -> int:
    """The id put between packed stage-1 documents: EOS for a causal LM, SEP for an encoder (BERT has no EOS)."""
    token_id = tokenizer.eos_token_id if kind is BaseKind.CAUSAL else tokenizer.sep_token_id
    if token_id is None:
        raise ConfigError(f"the {kind} base's tokenizer has no {'EOS' if kind is BaseKind.CAUSAL else 'SEP'} token "
                          "to separate stage-1 documents")
    return token_id


def copy_pooling_config(source: str | Path, target: str | Path) -> None:
    """Carry the base's sentence-transformers pooling config into a folder stage 1 writes (none: nothing to do)."""
    if (Path(source) / POOLING_CONFIG).exists():
        (Path(target) / POOLING_CONFIG).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(source) / POOLING_CONFIG, Path(target) / POOLING_CONFIG)


def load_base_model(name_or_path: str | Path, scene_features: Sequence[str]):
    """A local HF base (a folder, or a packaged name such as ``minilm``) with the project's special tokens added
    and the embeddings resized. ``model`` carries the head stage 1 trains
    (a causal-LM head, or a masked-LM head for an encoder: a sentence-transformers checkpoint has none, so its
    head starts untrained while the decoder stays tied to the word embeddings)."""
    path = resolve_base_model(name_or_path)
    kind = base_kind(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(f"{path}: needs a fast tokenizer (tokenizer.json); the server tokenises with `tokenizers`")
    extra = [t for t in special_tokens(scene_features) if t not in tokenizer.get_vocab()]
    tokenizer.add_special_tokens({"additional_special_tokens": extra}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN
    if kind is BaseKind.ENCODER and tokenizer.mask_token is None:
        raise ConfigError(f"--base-model {name_or_path}: an encoder base needs a mask token for the masked-LM loss")
    auto = AutoModelForCausalLM if kind is BaseKind.CAUSAL else AutoModelForMaskedLM
    model = auto.from_pretrained(path, local_files_only=True)
    model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer
