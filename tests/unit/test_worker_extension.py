"""The engine worker hands back heap memory that was freed (server/worker_extension.py)."""

import ctypes
import ctypes.util

from server.worker_extension import ChatloopWorker

BLOCK = 100 * 1024  # below glibc's mmap threshold: served from the heap, which free() does not shrink
BLOCKS = 1000


def resident_anon_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon"))


def test_freed_heap_memory_is_released() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)  # touched, so resident
    for block in blocks[:-1]:  # the last one holds the heap's top, as a live buffer would
        libc.free(block)
    before = resident_anon_kib()
    assert ChatloopWorker().release_freed_memory()
    released = before - resident_anon_kib()
    libc.free(blocks[-1])
    assert released > BLOCK * BLOCKS // 1024 // 2
