"""Embedding distillation losses: the student reproduces the teacher's embedding of the same text
(``larr train distill``, training/distill.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(student_i, teacher_i)`` over the rows of two (B, D) tensors (unnormalised is fine: the cosine
    ignores length, as the served unit-norm embeddings do)."""
    _check(student, teacher)
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def mse_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element of two (B, D) tensors (direction and length)."""
    _check(student, teacher)
    return F.mse_loss(student, teacher)


def _check(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"student and teacher must both be (B, D); got {tuple(student.shape)} and {tuple(teacher.shape)}")
