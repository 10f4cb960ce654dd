"""Keep freed memory in the process: large CPU tensors stop paying page faults every step.

glibc's ``malloc`` serves large blocks (above a threshold that grows to at most 32 MB) with
a fresh ``mmap`` and returns them to the system with ``munmap`` when they are freed. A
training step on the CPU allocates and frees the same large activations every step, so
each step maps new pages and the kernel zero-fills them on first touch: system time, not
arithmetic. At batch 128 the 32x32 maps of ``lambda_resnet26_cifar`` make this about a
third of the step (``beyond-attention bench train-step lambda_resnet26_cifar --batch 128``:
2.54 s a step with glibc's defaults, 1.64 s with freed memory kept; numbers in
``benchmarks/models.md``).

:func:`keep_freed_memory` switches ``mmap`` off for ``malloc`` (large blocks come from the
heap and go back to it) and stops trimming the heap, as jemalloc and tcmalloc, which
PyTorch recommends for CPU training, do by default. The price is that memory freed by the
process is kept for its next allocations instead of being handed back to the system (the
peak stays resident). The command line applies it (not the library on import: a program
that embeds the models keeps its own allocator settings); ``BEYOND_ATTENTION_MALLOC=system``
leaves glibc's defaults. On other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

MALLOC_ENV = "BEYOND_ATTENTION_MALLOC"

# mallopt parameters of glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # the largest int mallopt accepts: about 2 GiB kept at the heap's top


def keep_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to keep freed memory; True when the settings were applied.

    Does nothing (returns False) when ``BEYOND_ATTENTION_MALLOC=system`` is set, off Linux,
    or when the C library is not glibc.
    """
    if os.environ.get(MALLOC_ENV, "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
