# cython: language_level=3
"""The bounded pool of bn3d's output blocks: a numpy memory handler (NEP 49) installed
only around bn3d's own allocations (``bn3d/_src/output_pool.h`` says how it works)."""

from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport uint8_t
from libc.string cimport strcpy

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)
    int _import_array() except -1  # numpy's C API (import_array() is a macro that returns NULL)

cdef extern from "output_pool.h" nogil:
    const size_t BN3D_POOL_SMALLEST
    ctypedef struct bn3d_pool_stats:
        size_t limit
        size_t kept_bytes
        size_t kept_blocks
        size_t reused
        size_t fresh
    void *bn3d_pool_malloc(void *context, size_t size) noexcept
    void *bn3d_pool_calloc(void *context, size_t count, size_t size) noexcept
    void *bn3d_pool_realloc(void *context, void *pointer, size_t size) noexcept
    void bn3d_pool_free(void *context, void *pointer, size_t size) noexcept
    void bn3d_pool_set_limit(size_t limit)
    bn3d_pool_stats bn3d_pool_get_stats()

_import_array()

cdef PyDataMem_Handler handler
strcpy(handler.name, b"bn3d_output_pool")
handler.version = 1
handler.allocator.ctx = NULL
handler.allocator.malloc = bn3d_pool_malloc
handler.allocator.calloc = bn3d_pool_calloc
handler.allocator.realloc = bn3d_pool_realloc
handler.allocator.free = bn3d_pool_free
# numpy keeps a reference to the handler's capsule in every array it allocated.
cdef object capsule = PyCapsule_New(&handler, b"mem_handler", NULL)

SMALLEST = BN3D_POOL_SMALLEST


def install():
    """Make numpy allocate through the pool in this thread's context; return the handler
    to restore (``restore``)."""
    return PyDataMem_SetHandler(capsule)


def restore(previous):
    """Make numpy allocate through ``previous`` again."""
    PyDataMem_SetHandler(previous)


def set_limit(size_t nbytes):
    """Keep at most ``nbytes`` bytes of freed blocks (0 keeps none)."""
    bn3d_pool_set_limit(nbytes)


def stats():
    """The pool's limit, what it keeps, and how often it served an allocation."""
    cdef bn3d_pool_stats s = bn3d_pool_get_stats()
    return {"limit": s.limit, "kept_bytes": s.kept_bytes, "kept_blocks": s.kept_blocks,
            "reused": s.reused, "fresh": s.fresh}
