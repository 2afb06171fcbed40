"""``--base-model PATH``: any local Hugging Face causal LM gets the project's special tokens added."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from larr.text import EMB_TOKEN, special_tokens
from larr.training.llm import load_base_model

FEATURES = ("weather", "place")


@pytest.fixture()
def base_checkpoint(tmp_path):
    """A stand-in for a downloaded checkpoint: its own BPE vocabulary, no project tokens."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(["some general text about rain and food"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    return tmp_path / "base", len(tokenizer)


def test_special_tokens_added_and_embeddings_resized(base_checkpoint):
    path, base_vocab = base_checkpoint
    model, tokenizer = load_base_model(path, FEATURES)
    added = set(special_tokens(FEATURES)) - {"<pad>"}
    assert added <= set(tokenizer.get_vocab())
    assert tokenizer.pad_token is not None
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) > base_vocab
    ids = tokenizer("<scene_weather>rain</scene_weather>" + EMB_TOKEN, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<scene_weather>") and ids[-1] == tokenizer.convert_tokens_to_ids(EMB_TOKEN)
    with torch.no_grad():
        assert model(input_ids=torch.tensor([ids])).logits.shape[-1] == len(tokenizer)


def test_missing_base_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        load_base_model(tmp_path / "nope", FEATURES)
