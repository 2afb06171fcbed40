"""Stage 3's early stopping and learning-rate decay on plateau, against FuxiCTR's own decisions in BARS's published
FinalMLP Frappe_x1 log (reczoo/BARS ranking/ctr/FinalMLP/FinalMLP_frappe_x1, seed 2021): with lr_decay_patience 1
and patience 2 the schedule must decay and stop at the epochs that log says FuxiCTR did."""

from __future__ import annotations

import pytest

from larr.errors import ConfigError
from larr.training.config import CTRConfig
from larr.training.ctr import Plateau, record_validation

# validation AUC after epochs 1..32 of that log; FuxiCTR logged "Reduce learning rate on plateau" after epochs 15, 23,
# 31 and 32 and stopped after epoch 32 (two epochs in a row without gain)
BARS_VALID_AUC = [
    0.940814, 0.962458, 0.971601, 0.974917, 0.978341, 0.978471, 0.980229, 0.980285, 0.981008, 0.981085,
    0.981973, 0.982296, 0.982388, 0.982856, 0.982275, 0.984281, 0.985418, 0.985996, 0.986277, 0.986426,
    0.986507, 0.986510, 0.986507, 0.986548, 0.986554, 0.986577, 0.986582, 0.986614, 0.986630, 0.986631,
    0.986629, 0.986622,
]


def schedule(aucs: list[float], lr_decay_patience: int, patience: int) -> tuple[list[int], int]:
    """Replays stage 3's loop: (1-based epochs that decayed the learning rate, the epoch it stopped after)."""
    state = {"best_auc": -1.0, "stale_epochs": 0}
    decays = []
    for epoch, auc in enumerate(aucs, start=1):
        if record_validation(state, auc, lr_decay_patience) is Plateau.DECAY:
            decays.append(epoch)
        if state["stale_epochs"] >= patience:
            return decays, epoch
    return decays, len(aucs)


def test_fuxictr_schedule_reproduces_the_bars_log():
    assert schedule(BARS_VALID_AUC, lr_decay_patience=1, patience=2) == ([15, 23, 31, 32], 32)
    # the same curve under a decay patience of 2 would have kept the first learning rate through every single dip
    assert schedule(BARS_VALID_AUC, lr_decay_patience=2, patience=3) == ([32], 32)


def test_a_longer_decay_patience_decays_only_on_the_second_stale_epoch_in_a_row():
    aucs = [0.90, 0.91, 0.905, 0.92, 0.915, 0.914, 0.913, 0.93]
    # stale epochs: 3 (one in a row), 5, 6, 7 (three in a row)
    assert schedule(aucs, lr_decay_patience=1, patience=4) == ([3, 5, 6, 7], 8)
    assert schedule(aucs, lr_decay_patience=2, patience=4) == ([6], 8)
    assert schedule(aucs, lr_decay_patience=2, patience=3) == ([6], 7)


def test_decay_patience_must_leave_room_before_the_stop():
    assert CTRConfig(patience=3, lr_decay_patience=2).lr_decay_patience == 2
    with pytest.raises(ConfigError, match="lr_decay_patience"):
        CTRConfig(patience=2, lr_decay_patience=2)
    with pytest.raises(ConfigError, match="lr_decay_patience"):
        CTRConfig(lr_decay_patience=0)
