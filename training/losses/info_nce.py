"""InfoNCE with in-batch negatives (the stage-2 loss for every pair kind, and stage 3's alignment loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float | torch.Tensor, symmetric: bool = True) -> torch.Tensor:
    """Mean InfoNCE loss where ``keys[i]`` is the positive of ``queries[i]`` and every other key a negative.

    queries, keys: (B, D), L2-normalised (cosine similarity / temperature are the logits).
    ``symmetric`` averages the query->key and key->query directions (both sides are texts to embed).
    """
    if queries.shape != keys.shape or queries.dim() != 2:
        raise ValueError(f"queries and keys must both be (B, D); got {tuple(queries.shape)} and {tuple(keys.shape)}")
    logits = queries @ keys.T / temperature  # (B, B)
    targets = torch.arange(len(queries), device=queries.device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, targets))
    return loss


class Temperature(torch.nn.Module):
    """A fixed or learnable softmax temperature (learned in log space, clamped to [0.01, 1])."""

    def __init__(self, initial: float, learnable: bool):
        super().__init__()
        log_t = torch.tensor(float(initial)).log()
        if learnable:
            self.log_temperature = torch.nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(0.01, 1.0)
