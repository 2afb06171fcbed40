"""Stage 3's scene dropout: the LLM scene input of training examples replaced by the unseen-text row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from larr.contract import UNSEEN_SCENE_FILL
from larr.training.config import CTRConfig, load_config
from larr.training.ctr import SplitTensors, forward_rows, scene_dropout_mask


class RecordingModel:
    """Stands in for LarrCTR: keeps the inputs of the last call."""

    def __call__(self, sparse, scene, item_rows, history=None):
        self.sparse, self.scene, self.history = sparse, scene, history
        return None


def _data(n: int = 6, k: int = 3, d: int = 4) -> tuple[SplitTensors, torch.Tensor]:
    table = torch.randn(n * k, d) + 5.0  # (V, D), no zero rows
    data = SplitTensors(
        sparse=torch.arange(n * (2 + k)).view(n, 2 + k),
        item_rows=torch.arange(n),
        codes=torch.arange(n * k).view(n, k),
        labels=torch.zeros(n),
        users=np.zeros(n, dtype=np.int64),
    )
    return data, table


@pytest.mark.parametrize("p", [0.0, 1.0, 0.5])
def test_scene_dropout_replaces_llm_inputs_only(p: float) -> None:
    data, table = _data()
    rows = torch.tensor([0, 2, 3, 5])
    model = RecordingModel()
    forward_rows(model, data, rows, table, scene_dropout_mask(7, 11, len(rows), 3, p))
    expected = table[data.codes[rows]]  # (B, K, D)
    if p == 0.0:
        torch.testing.assert_close(model.scene, expected)
    elif p == 1.0:
        assert torch.all(model.scene == UNSEEN_SCENE_FILL)
    else:  # every (example, feature) row is either untouched or wholly the unseen row
        untouched = (model.scene == expected).all(-1)
        unseen = (model.scene == UNSEEN_SCENE_FILL).all(-1)
        assert torch.all(untouched ^ unseen)
    torch.testing.assert_close(model.sparse, data.sparse[rows])  # the scene ID fields are never dropped


def test_scene_dropout_mask_is_a_function_of_seed_and_step() -> None:
    assert scene_dropout_mask(1, 2, 512, 4, 0.0) is None
    a = scene_dropout_mask(1, 2, 512, 4, 0.1)
    torch.testing.assert_close(a, scene_dropout_mask(1, 2, 512, 4, 0.1))
    assert not torch.equal(a, scene_dropout_mask(1, 3, 512, 4, 0.1))
    assert 0.05 < a.float().mean().item() < 0.15  # 2048 draws at p = 0.1


def test_scene_dropout_config() -> None:
    assert CTRConfig().scene_dropout == 0.1
    assert load_config("tiny", {"ctr.scene_dropout": 0}).ctr.scene_dropout == 0.0
    with pytest.raises(ValueError, match="scene_dropout"):
        CTRConfig(scene_dropout=1.5)
