"""Stage 3's alignment loss: pull the scene representation towards the user's collaborative embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from larr.training.losses.info_nce import info_nce


def alignment_loss(scene: torch.Tensor, collaborative: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between projected scene vectors and collaborative (ID) embeddings of the same rows.

    scene: (B, E) output of the aggregation encoder's projection; collaborative: (B, E) the user's ID
    embedding. The collaborative side is a *target*: gradients stop there so the alignment cannot
    drag the ID embeddings towards the text space (the BCE loss alone trains them).
    Rows whose collaborative embedding repeats in the batch (same user twice) are positives of each
    other in truth; they are few with a large batch, so they are left as negatives.
    """
    return info_nce(F.normalize(scene, dim=-1), F.normalize(collaborative.detach(), dim=-1), temperature, symmetric=False)
