"""Non-zero padding modes, applied once before a kernel runs.

Zero padding never materialises: the kernels skip or zero-fill the padded positions.
"""

import numpy as np

# PyTorch's padding modes by their np.pad names.
NUMPY_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad_input(x: np.ndarray, padding, padding_mode: str) -> np.ndarray:
    """Pad the spatial (trailing) axes of ``x`` by ``padding``, ``d`` (before, after) pairs.

    ``padding_mode`` is ``"reflect"``, ``"replicate"`` or ``"circular"`` with the meaning of
    ``torch.nn.Conv*d``; the sizes were checked by the caller. Returns a new C-contiguous
    array; ``x`` is not modified.
    """
    lead = ((0, 0),) * (x.ndim - len(padding))
    return np.pad(x, lead + tuple(padding), mode=NUMPY_MODES[padding_mode])
