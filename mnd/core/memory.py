"""Keep freed memory in the process, so that attack iterations stop faulting pages in.

With glibc's default settings, a large block (above a threshold that adapts
up to 32 MB) is allocated with its own ``mmap`` and handed back to the
operating system when freed, and free memory at the top of the heap is
handed back once it exceeds twice that threshold. An attack allocates and
frees the same large tensors every iteration (the model's activations and
their gradients, the perceptual loss's windowed statistics), so each
iteration the kernel maps and zeroes the same memory again: on the
development machine, some 50 000 page faults and 0.15 s of kernel time per
MND iteration at batch 32 and 128 px, about a fifth of the model's own
forward and backward (benchmarks/RESULTS.md).

:func:`keep_freed_memory` tells glibc to serve every block from its heap and
to keep what is freed, so the next iteration reuses pages that are already
mapped. The process then holds on to its peak memory until it exits, which
suits the command line and the book's runs; a library user opts in by
calling it. It changes nothing elsewhere (macOS, Windows, musl, or another
allocator preloaded in glibc's place, though it then still reports True), and
``MND_KEEP_FREED_MEMORY=0`` turns it off. Calling ``mnd.cli.main.main`` in a
process (as the tests do) switches it on for that whole process.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1
"""mallopt's parameter: free memory at the top of the heap beyond this many bytes goes back to the OS."""
M_MMAP_MAX = -4
"""mallopt's parameter: at most this many blocks get an mmap of their own (0: none; the heap serves all)."""
NEVER_TRIM = -1
"""mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely" (any positive int still trims above 2 GB)."""
ENV = "MND_KEEP_FREED_MEMORY"

_done = False


def keep_freed_memory() -> bool:
    """Serve large blocks from glibc's heap and keep freed memory (see the module docstring).

    Idempotent; process-wide. Large blocks still get their own ``mmap`` when
    the heap cannot grow (glibc falls back to it), so nothing fails for lack
    of address space.

    Returns:
        True if glibc's settings are now in force (this call or an earlier
        one), False where there is no glibc or ``MND_KEEP_FREED_MEMORY=0``.
    """
    global _done
    if _done:
        return True
    if os.environ.get(ENV, "1").strip() == "0" or platform.libc_ver()[0] != "glibc":
        return False
    # the symbols already loaded in this process: its own libc, found without searching the disk
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the trim threshold first (it also stops the adaptive mmap threshold)
    _done = bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)) and bool(mallopt(M_MMAP_MAX, 0))
    return _done
