"""``scene_sensitivity`` (benchmarks/studies): mean |delta CTR| for paraphrases vs other meanings, on a known answer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scene_sensitivity import measure, synth_meanings

MEANINGS = {"weather": {"snow": ["blizzard", "heavy snow"], "heat": ["heatwave"]}}
CTR_OF_MEANING = {"snow": 0.2, "heat": 0.7}


class FakeRows:
    def __init__(self, weather: list[str], place: list[str]):
        self.scene = [np.array(weather, dtype=object), np.array(place, dtype=object)]

    def __len__(self) -> int:
        return len(self.scene[0])

    def subset(self, rows: np.ndarray) -> "FakeRows":
        return FakeRows(list(self.scene[0][rows]), list(self.scene[1][rows]))


class FakeModel:
    """CTR = a fixed value per weather meaning (0.5 for an unknown text); place never matters."""

    def __init__(self, rows: FakeRows):
        self.dataset = SimpleNamespace(test=rows, info=SimpleNamespace(scene_features=("weather", "place")))

    def embed(self, texts: list[str]) -> torch.Tensor:
        return torch.zeros(len(texts), 1)

    def score(self, rows, scene, table, index, id_scene=None) -> np.ndarray:
        # the embedder's texts move the CTR; the ID fields (id_scene) add 0.01 for the ID of "blizzard"
        ids = id_scene if id_scene is not None else scene
        meaning_of = {t: name for name, group in MEANINGS["weather"].items() for t in group}
        return np.array([CTR_OF_MEANING.get(meaning_of.get(t), 0.5) + 0.01 * (i == "blizzard") for t, i in zip(scene[0], ids[0])])


def test_paraphrases_and_other_meanings_are_told_apart():
    rows = FakeRows(["blizzard", "heatwave", "drizzle"], ["home", "office", "gym"])  # drizzle: no known meaning
    result = measure(FakeModel(rows), rows=10, meanings=MEANINGS)
    # text only: blizzard -> heavy snow (same, 0), -> heatwave (other, 0.5); heatwave -> blizzard, heavy snow (other,
    # 0.5 each). Served: the ID of blizzard adds 0.01, lost when blizzard is replaced, gained when it replaces heatwave
    text_only, served = result["text_only"]["weather"], result["served"]["weather"]
    assert text_only.paraphrase == pytest.approx(0.0) and text_only.paraphrase_pairs == 1
    assert text_only.other_meaning == pytest.approx(0.5) and text_only.other_meaning_pairs == 3
    assert served.paraphrase == pytest.approx(0.01)
    assert served.other_meaning == pytest.approx((0.49 + 0.49 + 0.5) / 3)  # 0.21 -> 0.7, 0.7 -> 0.21, 0.7 -> 0.2
    assert result["served"]["all"] == served  # place has no known meanings here


def test_rows_limits_the_requests():
    rows = FakeRows(["blizzard", "heatwave"], ["home", "office"])
    result = measure(FakeModel(rows), rows=1, meanings=MEANINGS)
    assert (result["served"]["all"].paraphrase_pairs, result["served"]["all"].other_meaning_pairs) == (1, 1)


def test_synth_meanings_cover_the_concept_features():
    meanings = synth_meanings()
    assert set(meanings) == {"time_slot", "weather", "place"}
    assert "blizzard" in meanings["weather"]["snow"] and "heatwave" in meanings["weather"]["heat"]
