"""Serialise parallel kernel launches across Python threads.

Numba's ``workqueue`` threading layer is not thread-safe: two parallel kernels launched
at once from different Python threads abort the whole process. Every kernel already uses
all of Numba's threads, so running launches one at a time costs no throughput, and one
lock works whichever threading layer is active. Kernels are compiled with ``nogil=True``,
so Python threads that are not convolving keep running meanwhile.
"""

import threading

KERNEL_LOCK = threading.Lock()
