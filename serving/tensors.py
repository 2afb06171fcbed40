"""Moving tensors between Triton's python backend and the runtimes (``pb_utils`` is passed in, so this
module imports without Triton). GPU tensors travel by DLPack, never through a host copy."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(tensor: Any) -> np.ndarray:
    """A ``pb_utils.Tensor`` as NumPy; a GPU tensor is copied to the host through DLPack + torch."""
    if tensor.is_cpu():
        return tensor.as_numpy()
    import torch.utils.dlpack

    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack()).cpu().numpy()


def output_tensor(pb_utils: Any, name: str, value: Any) -> Any:
    """NumPy arrays become ``pb_utils.Tensor``; torch tensors (CPU or CUDA) go through DLPack."""
    if hasattr(value, "__dlpack__") and not isinstance(value, np.ndarray):
        import torch.utils.dlpack

        return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value.contiguous()))
    return pb_utils.Tensor(name, np.ascontiguousarray(value))


def split_rows(value: Any, sizes: list[int]) -> list[Any]:
    """Split a (sum sizes, ...) NumPy array or torch tensor into consecutive row blocks."""
    if isinstance(value, np.ndarray):
        return np.split(value, np.cumsum(sizes)[:-1])
    return list(value.split(sizes))
