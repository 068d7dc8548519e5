"""Numba kernels. They assume clean, C-contiguous inputs of one float dtype and never
validate: the public functions in :mod:`numbaconv.functional` do that first."""
