"""What chatloop adds to vLLM's engine worker process, named in ``worker_extension_cls`` (``server/engine.py``).

vLLM imports this module in its worker process, which runs the model; the server process runs none. Importing it
applies the CPU LoRA patch (``server/cpu/lora.py``), and the class below adds the methods the server calls through
``collective_rpc``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import server.cpu.lora  # noqa: F401  (imported for its patch, applied on import)

log = logging.getLogger(__name__)


def _malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's ``malloc_trim``, or None on a C library without it (musl)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return getattr(libc, "malloc_trim", None)


class ChatloopWorker:
    def release_freed_memory(self) -> bool:
        """Hand the heap memory that the last swap freed back to the system.

        Why: reloading weights (and loading an adapter) frees hundreds of MB of buffers, but glibc's malloc keeps
        freed heap pages for reuse, so the worker's resident memory rose by 100-350 MB at each of the first
        version changes and never came down (the soak, docs/benchmarks.md). ``malloc_trim(0)`` returns every free
        page; measured over four swaps, a canary each, and three rollbacks, the worker stayed within 50 MB of its
        start instead of settling 130 MB higher. Returns whether memory was released."""
        trim = _malloc_trim()
        return bool(trim and trim(0))
