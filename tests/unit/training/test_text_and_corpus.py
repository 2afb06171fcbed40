"""Stage-1 corpus and tokenizer: special tokens delimit fields and are single tokens."""

from __future__ import annotations

import numpy as np
import pytest

from larr.data.synth import SCENE_FEATURES, SynthConfig, generate
from larr.text import EMB_TOKEN, format_item, format_scene, format_scene_feature, special_tokens
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer
from larr.training.corpus import build_corpus
from larr.training.llm import train_bpe_tokenizer


@pytest.fixture(scope="module")
def world():
    return generate(SynthConfig(num_users=30, shops_per_category=2, train_rows=600, valid_rows=50, test_rows=50, seed=11))


@pytest.fixture(scope="module")
def tokenizer(world):
    corpus = build_corpus(world, seed=0)
    return train_bpe_tokenizer(corpus, vocab_size=600, scene_features=SCENE_FEATURES)


def test_corpus_has_every_document_kind_with_tags(world):
    corpus = build_corpus(world, seed=0)
    items = [d for d in corpus if d.startswith("<item>")]
    records = [d for d in corpus if d.startswith("<scene>")]
    assert len(items) == len(world.items)
    assert len(records) == int(world.train.label.sum())
    assert set(world.knowledge) <= set(corpus)
    assert all(r.count("<scene_") == r.count("</scene_") >= 1 for r in records)
    assert any("<scene_weather>" in r for r in records) and any("<scene_weather>" not in r for r in records)
    category, _, rest = records[0].partition("<emb>")[2].partition("<item_name>")
    assert category in set(world.items.category) and rest.endswith("</item_name>")
    assert build_corpus(world, seed=0) == corpus  # seeded
    assert build_corpus(world, seed=1) != corpus


def test_special_tokens_are_single_ids(tokenizer):
    for token in special_tokens(SCENE_FEATURES):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert ids == [tokenizer.convert_tokens_to_ids(token)], token
    text = format_scene_feature("weather", "heavy rain")
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert pieces[0] == "<scene_weather>" and pieces[-1] == "</scene_weather>"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_format_helpers():
    assert format_scene(["a", "b"], ["x", "y"]) == "<scene><scene_a>x</scene_a><scene_b>y</scene_b></scene>"
    long = " ".join(["word"] * 100)
    assert format_item("n", "c", long).count("word") == 48
    with pytest.raises(ValueError):
        format_scene(["a"], ["x", "y"])


def test_embedding_tokenizer_pads_right_and_ends_in_emb(tokenizer):
    embed = EmbeddingTokenizer(tokenizer.backend_tokenizer, EmbeddingInputConfig(max_length=12, pad_to_multiple_of=4))
    ids, mask = embed(["heavy rain", "a much longer text about a rainy evening in the office with noodles and soup"])
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.shape == (2, 12) and mask[1].sum() == 12  # truncated to max_length
    emb_id = tokenizer.convert_tokens_to_ids(EMB_TOKEN)
    for row in range(2):
        last = mask[row].sum() - 1
        assert ids[row, last] == emb_id  # <emb> is the last real token even after truncation
        assert (mask[row, : last + 1] == 1).all() and (mask[row, last + 1 :] == 0).all()
    short_ids, short_mask = embed(["rain"])
    assert short_ids.shape[1] % 4 == 0 and short_ids.shape[1] < 12
    huge = "rain " * 20_000
    assert embed.token_ids([huge]) == embed.token_ids([huge[: embed.max_text_chars]])
    with pytest.raises(ValueError):
        embed([])
