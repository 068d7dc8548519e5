"""numbaconv: 1D, 2D and 3D convolution layers for NumPy arrays, compiled by Numba.

Public names only; see SPEC.md for the contract. Importing compiles nothing: kernels are
compiled (or loaded from Numba's on-disk cache) on first use.
"""

from ._dispatch import choose_method, explain
from ._version import __version__  # noqa: F401  (public)
from ._tune import tune
from .gradients import conv_backward, conv_transpose1d, conv_transpose2d, conv_transpose3d
from .layers import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .functional import (
    conv,
    conv1d,
    conv2d,
    conv3d,
    count_macs,
    count_params,
    output_shape,
)
from . import signal  # noqa: F401  (numbaconv.signal.correlate / convolve, SciPy-style)


__all__ = [
    "conv", "conv1d", "conv2d", "conv3d", "output_shape", "count_params", "count_macs",
    "choose_method", "explain", "tune",
    "conv_backward", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
]
