"""How recommendation records become LLM text: special tokens and formatting, shared by training and serving.

Every text the LLM sees is built here, so that stage 1's corpus, stage 2's embedder inputs, stage 3's
per-feature embeddings and the server's feature cache can never disagree about a token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

EMB_TOKEN = "<emb>"  # appended to every embedder input; its last hidden state is the text embedding
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"

_FIELD_TAGS = ("item", "item_name", "item_cat", "item_desc", "user", "click", "scene")


def open_tag(field: str) -> str:
    return f"<{field}>"


def close_tag(field: str) -> str:
    return f"</{field}>"


def scene_tag(feature: str) -> str:
    """The tag name of one scene feature, e.g. ``scene_weather``."""
    return f"scene_{feature}"


def special_tokens(scene_features: Iterable[str]) -> list[str]:
    """All added special tokens, in a stable order (the tokenizer's ids depend on it)."""
    tags = [*_FIELD_TAGS, *(scene_tag(f) for f in scene_features)]
    tokens = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, EMB_TOKEN]
    for tag in tags:
        tokens += [open_tag(tag), close_tag(tag)]
    return tokens


def wrap(field: str, text: str) -> str:
    return f"{open_tag(field)}{text}{close_tag(field)}"


def _short_description(description: str, max_words: int) -> str:
    return " ".join(description.split()[:max_words])


def format_item(name: str, category: str, description: str, max_description_words: int = 48) -> str:
    """``<item><item_name>…</item_name><item_cat>…</item_cat><item_desc>…</item_desc></item>``."""
    short = _short_description(description, max_description_words)
    return wrap("item", wrap("item_name", name) + wrap("item_cat", category) + wrap("item_desc", short))


def format_item_name_view(name: str) -> str:
    """One view of an item, its name alone: ``<item><item_name>…</item_name></item>`` (stage 2's item-views pairs)."""
    return wrap("item", wrap("item_name", name))


def format_item_description_view(description: str, max_description_words: int = 48) -> str:
    """The other view, its description alone: ``<item><item_desc>…</item_desc></item>``."""
    return wrap("item", wrap("item_desc", _short_description(description, max_description_words)))


def format_scene_feature(feature: str, text: str) -> str:
    """One scene feature, the unit LARR embeds and caches: ``<scene_weather>heavy rain</scene_weather>``."""
    return wrap(scene_tag(feature), text)


def format_scene(features: Sequence[str], texts: Sequence[str]) -> str:
    """The whole scene as one text (the full-text baseline LARR avoids, and stage-1 records)."""
    return wrap("scene", "".join(format_scene_feature(f, t) for f, t in zip(features, texts, strict=True)))


def format_user(clicked_item_names: Sequence[str]) -> str:
    """A user as the history of what they clicked: ``<user><click>A</click><click>B</click></user>``."""
    return wrap("user", "".join(wrap("click", name) for name in clicked_item_names))


def format_persona(categories: Sequence[str]) -> str:
    """An explicit persona, a user as the categories they click most: ``<user><item_cat>A</item_cat>…</user>``."""
    return wrap("user", "".join(wrap("item_cat", category) for category in categories))


def format_click_in_scene(item_name: str, features: Sequence[str], texts: Sequence[str]) -> str:
    """One click with where/when it happened: ``<scene>…</scene><click>A</click>`` (stage 1's behaviour records)."""
    return format_scene(features, texts) + wrap("click", item_name)
