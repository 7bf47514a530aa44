# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Scheduling of bn3d's kernels: blocks, threads and the canonical order of every sum.

The arithmetic on data lives in C (``bn3d/_src``: ``moments.h``, ``gradient_sums.h``,
``maps.h``, compiled once per instruction set; ``exact_sum.h`` and ``channel_sums.h``
for the channel totals); this module decides which blocks of which arrays they run
on, on which threads. Its callers (:mod:`bn3d._core`) validate every array; the
kernels trust them.

Where to find what
------------------
- Entry points (Python): ``batch_stats`` (statistics), ``train_forward`` and
  ``eval_forward`` (forward), ``backward_pass`` (backward),
  ``update_running_stats``, ``inverse_std``; the partial sums of a chunk of a batch
  and their merge (``moment_partials``, ``gradient_partials``, ``merge_partials``,
  ``finish_moments``, ``finish_gradients``: what bn3d.dask distributes); build and
  thread information.
- Statistics: the moments of a block, the pilots, the channel totals.
- Forward: the statistics then the normalisation (``normalise_train``); the
  normalisation alone (``normalise``).
- Backward: the gradient sums then grad_input (``backward``).

Layouts
-------
Every array is seen as ``(N, C, L)``: batch, channel and the flattened spatial
extent, in one of two layouts: *channels first*, unit stride along ``L`` and any
strides along ``N`` and ``C`` (NCDHW, and sliced or transposed batches of it); or
*channels last*, unit stride along ``C`` and each sample's ``(L, C)`` slab dense
(NDHWC; any stride along ``N``). Any other layout is copied into the first by the
caller.

The canonical order
-------------------
Every statistic and gradient sum is defined on logical indices ``(n, c, l)``, never
on memory addresses, threads or chunks:

1. The values of channel ``c`` are cut into *blocks*: ``G = max(1, 2048 // L)``
   consecutive rows ``n`` (``n`` from a multiple of ``G``) when rows are short, or
   segments ``[2048 k, 2048 (k + 1))`` of ``l`` in one row when they are long.
2. A block's moments (count, mean, sum of squared deviations) come from the corrected
   two-pass algorithm over 32 lanes, element ``l`` of each row in lane ``l % 32``,
   rows in order (``moments.h``); its gradient sums, ``sum(g)`` and
   ``sum(g * (x - mean))``, from 16-lane sums over each row (float data: float runs
   of 128 added into double lanes; ``gradient_sums.h``), the rows of a block added in
   order.
3. The blocks of a channel are combined in *exact* sums (``exact_sum.h``): the order
   of the blocks changes no bit. The moments use a pilot, the mean of the channel's
   first block (rows ``0 .. G - 1``, ``l`` from 0), and the exact sums of
   ``n_b (m_b - K)`` and ``M_b + n_b (m_b - K)**2`` (``channel_sums.h``).

So a result has the same bits whatever the memory layout, the number of threads, the
instruction set, and the split of the batch into chunks of whole blocks (along ``N``,
at multiples of ``G``; along ``L``, at multiples of 2048), computed apart and merged:
what bn3d.dask relies on.

Numerics
--------
Statistics accumulate in double precision; no sum subtracts two large uncentred
quantities, so the variance stays accurate when ``|mean|`` is far larger than the
standard deviation (the pilot bounds the cancellation: see ``channel_sums.h``), and a
constant channel has a mean equal to its value and a variance of exactly zero. An inf
in a channel makes its mean infinite and its variance NaN, as in PyTorch. The
normalised output and grad_input are computed in the data's precision from
per-channel constants (``maps.h``), the mean split in two values of the data's type
so that the centring is nearly exact. The code is built without ``-ffast-math`` and
with ``-ffp-contract=off``: NaN and inf propagate and no fused multiply-add changes
the rounding from one instruction set to another.

Threads and memory
------------------
Each thread adds the blocks it takes into its own exact sums, merged when all are
done. With many channels each thread takes whole channels, so the normalisation
re-reads a channel that the reduction has just brought into cache; with few, the team
shares each channel's blocks. Passes over large arrays write their output with
non-temporal stores (``set_stream_threshold``), as wide as the CPU has
(``store_width``). Extra memory is O(C) (about 1 KiB a channel and thread).
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

cdef extern from *:
    """
    #ifndef BN3D_BUILD_FLAGS
    #define BN3D_BUILD_FLAGS ""
    #endif
    """
    const char *BN3D_BUILD_FLAGS

cdef enum:
    BLOCK = 2048
    # A pass runs channel by channel, each channel on one thread, when there are at
    # least this many channels per thread (or they divide evenly).
    CHANNELS_PER_THREAD = 8
    # Channels last: channels reduced together (one 64-byte line of float32).
    GROUP = 16
    # Channels last: elements of a sample's slab normalised per work item.
    SLAB_CHUNK = 65536

# The kernels of the widest instruction set this CPU has (see set_store_width).
cdef int cpu_store_bytes = bn3d_cpu_store_bytes()
cdef const bn3d_kernel_table *kernels = bn3d_kernels_for(cpu_store_bytes)
# Output passes of calls whose arrays hold more than this many bytes in all use
# non-temporal stores (set from the last-level cache size by bn3d._cache).
cdef Py_ssize_t stream_above = 32 * 1024 * 1024


# ==========================================================================================
# Entry points. Data arrays are 3-D: (N, C, L) with unit stride along L, or, when
# ``channels_last``, (N, L, C) with unit stride along C and each sample's (L, C) slab
# dense (checked by the caller). Per-channel arrays are contiguous float64 of length C.
# ==========================================================================================

# -- build and threads ---------------------------------------------------------------------


def openmp_enabled():
    """Return whether the kernels were compiled with OpenMP."""
    return bool(bn3d_openmp_enabled())


def openmp_max_threads():
    """Return ``omp_get_max_threads()`` (1 without OpenMP)."""
    return bn3d_openmp_max_threads()


def streaming_supported():
    """Return whether the kernels can write with non-temporal stores (x86-64)."""
    return bool(BN3D_STREAMING)


def store_width():
    """Return the width in bytes of the vector stores of streamed outputs: 64 with
    AVX-512, 32 with AVX2, else 16; the other kernels run in the version built for
    the same instruction set."""
    return kernels.store_bytes


def set_store_width(int nbytes):
    """Run the kernels built for stores of ``nbytes`` bytes (16, 32 or 64, at most what
    the CPU has): every version gives the same bits, and tests compare them."""
    global kernels
    if nbytes not in (16, 32, 64) or nbytes > cpu_store_bytes:
        raise ValueError(f"the store width must be 16, 32 or 64 and at most "
                         f"{cpu_store_bytes} on this machine, got {nbytes}")
    kernels = bn3d_kernels_for(nbytes)


def set_stream_threshold(Py_ssize_t nbytes):
    """Stream the outputs of calls whose arrays hold more than ``nbytes`` bytes."""
    global stream_above
    if nbytes < 0:
        raise ValueError(f"the threshold must be non-negative, got {nbytes}")
    stream_above = nbytes


def stream_threshold():
    """Return the size in bytes above which calls stream their outputs."""
    return stream_above


def build_flags():
    """Return the compiler flags the kernels were built with."""
    return BN3D_BUILD_FLAGS.decode()


def compiler_version():
    """Return the version string of the compiler that built the kernels."""
    return bn3d_compiler_version().decode()


#: The elements of one block: a split of a row at multiples of it keeps every block whole.
BLOCK_ELEMENTS = BLOCK


def block_rows(Py_ssize_t length):
    """Return how many consecutive rows of ``length`` elements form one block (``G``):
    a split of the batch at multiples of it keeps every block whole."""
    return max(1, BLOCK // length) if length > 0 else 1


# -- statistics ----------------------------------------------------------------------------


def batch_stats(const floating[:, :, :] x, bint channels_last, double eps,
                double[::1] mean, double[::1] invstd, double[::1] var_unbiased, int threads):
    """Batch statistics of ``x`` alone, bitwise those of ``train_forward``: the mean,
    ``1 / sqrt(biased variance + eps)`` and the unbiased variance of each channel (NaN
    for an empty channel; the unbiased variance of one value is NaN)."""
    cdef Geometry geometry = make_geometry(x, channels_last, 0)
    cdef Statistics out = statistics_outputs(mean, invstd, var_unbiased, eps)
    cdef int status
    if geometry.channels == 0:
        return
    with nogil:
        status = normalise_train(&geometry, &x[0, 0, 0], strides_of(x, channels_last),
                                 <floating *>NULL, strides_of(x, channels_last), NULL, NULL,
                                 &out, threads)
    if status != 0:
        raise MemoryError()


def update_running_stats(double[::1] running_mean, double[::1] running_var,
                         const double[::1] mean, const double[::1] var_unbiased,
                         double momentum):
    """``running = (1 - momentum) * running + momentum * batch``, in place."""
    cdef Py_ssize_t c
    for c in range(running_mean.shape[0]):
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c]
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var_unbiased[c]


def inverse_std(const double[::1] var, double eps, double[::1] invstd):
    """``invstd = 1 / sqrt(var + eps)``, elementwise."""
    cdef Py_ssize_t c
    for c in range(var.shape[0]):
        invstd[c] = 1.0 / sqrt(var[c] + eps)


# -- forward -------------------------------------------------------------------------------


def train_forward(const floating[:, :, :] x, floating[:, :, :] y, bint channels_last,
                  const double[::1] weight, const double[::1] bias, double eps,
                  double[::1] mean, double[::1] invstd, double[::1] var_unbiased,
                  int threads):
    """Normalise ``x`` into ``y`` (of the same layout) with its batch statistics, and
    store them as ``batch_stats`` does."""
    cdef Geometry geometry = make_geometry(x, channels_last, 2 * <Py_ssize_t>sizeof(floating))
    cdef Statistics out = statistics_outputs(mean, invstd, var_unbiased, eps)
    cdef int status
    if geometry.channels == 0:
        return
    with nogil:
        status = normalise_train(&geometry, &x[0, 0, 0], strides_of(x, channels_last),
                                 &y[0, 0, 0], strides_of(y, channels_last), &weight[0],
                                 &bias[0], &out, threads)
    if status != 0:
        raise MemoryError()


def eval_forward(const floating[:, :, :] x, floating[:, :, :] y, bint channels_last,
                 const double[::1] mean, const double[::1] var,
                 const double[::1] weight, const double[::1] bias, double eps,
                 double[::1] invstd, int threads):
    """Normalise ``x`` into ``y`` with given statistics ``mean`` and ``var``; store
    ``1 / sqrt(var + eps)`` of each channel in ``invstd``."""
    cdef Py_ssize_t c
    for c in range(invstd.shape[0]):
        invstd[c] = 1.0 / sqrt(var[c] + eps)
    normalise_with_stats(x, y, channels_last, mean, invstd, weight, bias, threads)


def normalise_with_stats(const floating[:, :, :] x, floating[:, :, :] y, bint channels_last,
                         const double[::1] mean, const double[::1] invstd,
                         const double[::1] weight, const double[::1] bias, int threads):
    """Normalise ``x`` into ``y`` with given means and ``invstd``: exactly what
    ``train_forward`` does once it has the batch statistics (a chunk of a batch whose
    statistics were reduced elsewhere)."""
    cdef Geometry geometry = make_geometry(x, channels_last, 2 * <Py_ssize_t>sizeof(floating))
    cdef Py_ssize_t c, channels = geometry.channels
    cdef double *scale
    cdef int status
    if channels == 0:
        return
    scale = <double *>malloc(channels * sizeof(double))
    if scale == NULL:
        raise MemoryError()
    for c in range(channels):
        scale[c] = weight[c] * invstd[c]
    with nogil:
        status = normalise(&geometry, &x[0, 0, 0], strides_of(x, channels_last), &y[0, 0, 0],
                           strides_of(y, channels_last), &mean[0], scale, &bias[0], threads)
    free(scale)
    if status != 0:
        raise MemoryError()


# -- backward ------------------------------------------------------------------------------


def backward_pass(const floating[:, :, :] grad_output, const floating[:, :, :] x,
                  floating[:, :, :] grad_input, bint channels_last,
                  const double[::1] mean, const double[::1] invstd, const double[::1] weight,
                  double[::1] grad_weight, double[::1] grad_bias, bint batch_stats,
                  int threads):
    """Gradients of a forward that normalised with ``mean`` and ``invstd``:
    ``grad_weight = sum(g * xhat)``, ``grad_bias = sum(g)``, and, when those came from
    the batch (``batch_stats``),
    ``grad_input = w * invstd / n * (n * g - sum(g) - xhat * sum(g * xhat))``, else
    (fixed statistics) ``grad_input = g * w * invstd``. All three arrays share one
    layout."""
    cdef Geometry geometry = make_geometry(x, channels_last, 3 * <Py_ssize_t>sizeof(floating))
    cdef Gradients out = gradient_outputs(mean, invstd, weight, grad_weight, grad_bias)
    cdef int status
    if geometry.channels == 0:
        return
    with nogil:
        status = backward(&geometry, &grad_output[0, 0, 0], strides_of(grad_output, channels_last),
                          &x[0, 0, 0], strides_of(x, channels_last), &grad_input[0, 0, 0],
                          strides_of(grad_input, channels_last), &out, batch_stats, threads)
    if status != 0:
        raise MemoryError()


# -- partial sums of chunks (for bn3d.dask) -------------------------------------------------
# A chunk's partial sums are an int64 array of shape (C, PARTIAL_WORDS): for each
# channel its count and two exact sums, packed (``pack_sums``). Merging two is exact.


def pilots(const floating[:, :, :] x, bint channels_last, double[::1] pilot_out,
           int threads):
    """The pilot of each channel: the mean of its first block, which must be the first
    block of ``x`` (rows ``0 .. G - 1`` of the batch, ``l`` from 0)."""
    cdef Geometry geometry = make_geometry(x, channels_last, 0)
    cdef int status
    if geometry.channels == 0 or geometry.blocks == 0:
        return
    with nogil:
        status = first_block_pilots(&geometry, &x[0, 0, 0], strides_of(x, channels_last),
                                    &pilot_out[0], threads)
    if status != 0:
        raise MemoryError()


def moment_partials(const floating[:, :, :] x, bint channels_last, const double[::1] pilot,
                    long long[:, ::1] partials, int threads):
    """The moment sums of each channel of a chunk, every block of it reduced as in the
    whole batch (the chunk must start on a block boundary)."""
    cdef Geometry geometry = make_geometry(x, channels_last, 0)
    cdef bn3d_moment_sums *sums = <bn3d_moment_sums *>malloc(
        max(1, geometry.channels) * sizeof(bn3d_moment_sums))
    cdef Py_ssize_t c
    cdef int status
    if sums == NULL:
        raise MemoryError()
    with nogil:
        status = reduce_moments(&geometry, &x[0, 0, 0], strides_of(x, channels_last),
                                &pilot[0] if geometry.channels else NULL, sums, threads)
    if status == 0:
        for c in range(geometry.channels):
            pack_moment_sums(&sums[c], &partials[c, 0])
    free(sums)
    if status != 0:
        raise MemoryError()


def gradient_partials(const floating[:, :, :] grad_output, const floating[:, :, :] x,
                      bint channels_last, const double[::1] mean, long long[:, ::1] partials,
                      int threads):
    """The gradient sums of each channel of a chunk (``sum(g)``, ``sum(g * (x - mean))``)."""
    cdef Geometry geometry = make_geometry(x, channels_last, 0)
    cdef bn3d_gradient_totals *sums = <bn3d_gradient_totals *>malloc(
        max(1, geometry.channels) * sizeof(bn3d_gradient_totals))
    cdef Py_ssize_t c
    cdef int status
    if sums == NULL:
        raise MemoryError()
    with nogil:
        status = reduce_gradients(&geometry, &grad_output[0, 0, 0],
                                  strides_of(grad_output, channels_last), &x[0, 0, 0],
                                  strides_of(x, channels_last),
                                  &mean[0] if geometry.channels else NULL, sums, threads)
    if status == 0:
        for c in range(geometry.channels):
            pack_gradient_totals(&sums[c], &partials[c, 0])
    free(sums)
    if status != 0:
        raise MemoryError()


def merge_partials(long long[:, ::1] into, const long long[:, ::1] other):
    """``into += other``: the sums of two chunks, exactly, in place."""
    cdef Py_ssize_t c
    cdef bn3d_exact_sum a, b
    cdef double count_a, count_b
    cdef int which
    for c in range(into.shape[0]):
        memcpy(&count_a, &into[c, 0], sizeof(double))
        memcpy(&count_b, &other[c, 0], sizeof(double))
        count_a = count_a + count_b
        memcpy(&into[c, 0], &count_a, sizeof(double))
        for which in range(2):
            unpack_sum(&into[c, 1 + which * SUM_WORDS], &a)
            unpack_sum(&other[c, 1 + which * SUM_WORDS], &b)
            bn3d_exact_merge(&a, &b)
            pack_sum(&a, &into[c, 1 + which * SUM_WORDS])


def finish_moments(const long long[:, ::1] partials, const double[::1] pilot, double eps,
                   double[::1] mean, double[::1] invstd, double[::1] var_unbiased):
    """The statistics of merged moment partials, as ``batch_stats`` gives them."""
    cdef Statistics out = statistics_outputs(mean, invstd, var_unbiased, eps)
    cdef bn3d_moment_sums sums
    cdef Py_ssize_t c
    for c in range(partials.shape[0]):
        unpack_moment_sums(&partials[c, 0], &sums)
        store_statistics(&sums, pilot[c], &out, c)


def finish_population(const long long[:, ::1] partials, const double[::1] pilot,
                      double[::1] count, double[::1] mean, double[::1] var,
                      double[::1] var_unbiased):
    """The count, mean and biased and unbiased variances of merged moment partials."""
    cdef bn3d_moment_sums sums
    cdef double m2
    cdef Py_ssize_t c
    for c in range(partials.shape[0]):
        unpack_moment_sums(&partials[c, 0], &sums)
        bn3d_moment_sums_finish(&sums, pilot[c], &mean[c], &m2)
        count[c] = sums.count
        var[c] = m2 / sums.count
        var_unbiased[c] = m2 / (sums.count - 1)


def finish_gradients(const long long[:, ::1] partials, const double[::1] invstd,
                     double[::1] grad_weight, double[::1] grad_bias):
    """The parameter gradients of merged gradient partials."""
    cdef bn3d_gradient_totals sums
    cdef Py_ssize_t c
    for c in range(partials.shape[0]):
        unpack_gradient_totals(&partials[c, 0], &sums)
        grad_bias[c] = bn3d_exact_value(&sums.sum)
        grad_weight[c] = bn3d_exact_value(&sums.dot) * invstd[c] if sums.count > 0 else 0.0


def gradient_constants(const long long[:, ::1] partials, const double[::1] mean,
                       const double[::1] invstd, const double[::1] weight,
                       double[::1] grad_mean, double[::1] coefficient, double[::1] scale):
    """The per-channel constants of grad_input for merged gradient partials (what
    ``grad_input_map`` takes)."""
    cdef bn3d_gradient_totals sums
    cdef GradInputConstants k
    cdef Gradients out
    cdef double ignored
    cdef Py_ssize_t c
    out.mean = &mean[0]
    out.invstd = &invstd[0]
    out.weight = &weight[0]
    out.grad_weight = &ignored
    out.grad_bias = &ignored
    for c in range(partials.shape[0]):
        unpack_gradient_totals(&partials[c, 0], &sums)
        k = grad_input_constants_of(&sums, &out, c)
        grad_mean[c] = k.grad_mean
        coefficient[c] = k.grad_coefficient
        scale[c] = k.scale


def grad_input_map(const floating[:, :, :] grad_output, const floating[:, :, :] x,
                   floating[:, :, :] grad_input, bint channels_last, const double[::1] mean,
                   const double[::1] grad_mean, const double[::1] coefficient,
                   const double[::1] scale, int threads):
    """grad_input of a batch-statistics backward from its per-channel constants."""
    cdef Geometry geometry = make_geometry(x, channels_last, 3 * <Py_ssize_t>sizeof(floating))
    cdef GradInputConstants *constants
    cdef Py_ssize_t c
    cdef int status
    if geometry.channels == 0:
        return
    constants = <GradInputConstants *>malloc(geometry.channels * sizeof(GradInputConstants))
    if constants == NULL:
        raise MemoryError()
    for c in range(geometry.channels):
        constants[c].mean = mean[c]
        constants[c].grad_mean = grad_mean[c]
        constants[c].grad_coefficient = coefficient[c]
        constants[c].scale = scale[c]
    with nogil:
        status = apply_grad_input(&geometry, &grad_output[0, 0, 0],
                                  strides_of(grad_output, channels_last), &x[0, 0, 0],
                                  strides_of(x, channels_last), &grad_input[0, 0, 0],
                                  strides_of(grad_input, channels_last), constants, threads)
    free(constants)
    if status != 0:
        raise MemoryError()


def partial_words():
    """The number of int64 words of one channel's partial sums."""
    return PARTIAL_WORDS


# ==========================================================================================
# Geometry, layouts and threads
# ==========================================================================================

cdef struct Geometry:
    Py_ssize_t batch            # N
    Py_ssize_t channels         # C
    Py_ssize_t length           # L, elements per (n, c) row
    bint channels_last          # unit stride along C (else along L)
    Py_ssize_t rows_per_block   # short rows: whole rows per block, G (else 1)
    Py_ssize_t blocks_per_row   # long rows: segments per row (else 1)
    Py_ssize_t blocks           # blocks per channel
    bint stream                 # output passes use non-temporal stores


cdef struct Strides:
    # Element strides of an (N, C, L) array: between samples, channels and positions
    # (channels first, position == 1; channels last, channel == 1 and position == C).
    Py_ssize_t sample
    Py_ssize_t channel
    Py_ssize_t position


cdef struct Block:
    # rows of size elements, from position start of row first_row of a channel
    Py_ssize_t first_row
    Py_ssize_t rows
    Py_ssize_t start
    Py_ssize_t size


cdef Geometry make_geometry(const floating[:, :, :] x, bint channels_last,
                            Py_ssize_t bytes_per_element) noexcept nogil:
    """The blocks of a call on ``x`` whose arrays hold ``bytes_per_element`` bytes per
    element of ``x`` in all (0 when it writes no output)."""
    cdef Geometry geometry
    cdef Py_ssize_t length
    geometry.batch = x.shape[0]
    geometry.channels = x.shape[2] if channels_last else x.shape[1]
    geometry.length = length = x.shape[1] if channels_last else x.shape[2]
    geometry.channels_last = channels_last
    geometry.rows_per_block = max(1, BLOCK // length) if length > 0 else 1
    geometry.blocks_per_row = 1
    if geometry.rows_per_block == 1:
        geometry.blocks_per_row = (length + BLOCK - 1) // BLOCK
    geometry.blocks = 0
    if length > 0:
        geometry.blocks = ((geometry.batch + geometry.rows_per_block - 1)
                           // geometry.rows_per_block * geometry.blocks_per_row)
    geometry.stream = (BN3D_STREAMING and bytes_per_element > 0 and
                       geometry.batch * geometry.channels * length
                       > stream_above // bytes_per_element)
    return geometry


cdef inline Strides strides_of(const floating[:, :, :] a, bint channels_last) noexcept nogil:
    cdef Strides s
    cdef Py_ssize_t item = sizeof(floating)
    s.sample = a.strides[0] // item
    if channels_last:
        s.position = a.strides[1] // item
        s.channel = a.strides[2] // item
    else:
        s.channel = a.strides[1] // item
        s.position = a.strides[2] // item
    return s


cdef inline Block locate_block(const Geometry *geometry, Py_ssize_t index) noexcept nogil:
    """Block ``index`` of a channel: whole short rows, or a segment of a long row."""
    cdef Block block
    block.first_row = (index // geometry.blocks_per_row) * geometry.rows_per_block
    block.rows = min(geometry.rows_per_block, geometry.batch - block.first_row)
    block.start = (index % geometry.blocks_per_row) * BLOCK
    block.size = min(<Py_ssize_t>BLOCK, geometry.length - block.start)
    return block


cdef inline Py_ssize_t at(const Strides *s, Py_ssize_t n, Py_ssize_t c,
                          Py_ssize_t l) noexcept nogil:
    """The offset of element (n, c, l)."""
    return n * s.sample + c * s.channel + l * s.position


cdef inline bint serial(int threads) noexcept nogil:
    """Whether to run on the calling thread without entering an OpenMP region: plain
    loops cost nothing to start, and keep small, serial calls from waking (or paying
    for) the OpenMP team."""
    return threads <= 1


cdef inline bint by_channel(const Geometry *geometry, int threads) noexcept nogil:
    """Whether each thread takes whole channels (rather than the team sharing each one)."""
    return (geometry.channels % threads == 0
            or geometry.channels >= CHANNELS_PER_THREAD * threads)


cdef inline void end_streaming(const Geometry *geometry) noexcept nogil:
    """Make this thread's non-temporal stores, if any, visible before it goes on."""
    if geometry.stream:
        bn3d_stream_fence()


cdef inline Py_ssize_t groups_of(const Geometry *geometry) noexcept nogil:
    """Channels last: the groups of up to GROUP channels reduced together."""
    return (geometry.channels + GROUP - 1) // GROUP


# ==========================================================================================
# Statistics: the moments of blocks, the pilots, the channel totals
# ==========================================================================================

cdef struct Moments:
    double count
    double mean
    double m2       # sum of squared deviations from the mean


cdef struct Statistics:
    # Per-channel outputs of a statistics reduction.
    double *mean
    double *invstd          # 1 / sqrt(biased variance + eps)
    double *var_unbiased
    double eps


cdef inline Statistics statistics_outputs(double[::1] mean, double[::1] invstd,
                                          double[::1] var_unbiased, double eps):
    cdef Statistics out
    out.mean = &mean[0] if mean.shape[0] else NULL
    out.invstd = &invstd[0] if invstd.shape[0] else NULL
    out.var_unbiased = &var_unbiased[0] if var_unbiased.shape[0] else NULL
    out.eps = eps
    return out


cdef inline Moments block_moments(const Geometry *geometry, const floating *x,
                                  const Strides *s, Py_ssize_t c,
                                  Py_ssize_t index) noexcept nogil:
    """The moments of block ``index`` of channel ``c`` (channels first)."""
    cdef Moments result
    cdef Block block = locate_block(geometry, index)
    cdef const floating *start = x + at(s, block.first_row, c, block.start)
    result.count = block.rows * block.size
    if floating is float:
        kernels.moments_float(start, s.sample, block.rows, block.size, &result.mean, &result.m2)
    else:
        kernels.moments_double(start, s.sample, block.rows, block.size, &result.mean, &result.m2)
    return result


cdef inline void tile_moments(const Geometry *geometry, const floating *x, const Strides *s,
                              Py_ssize_t group, Py_ssize_t index, floating *scratch,
                              double *mean, double *m2) noexcept nogil:
    """Channels last: the moments of block ``index`` of every channel of ``group``: a full
    group by the channels-last kernel, which vectorises across the channels; a narrower
    one gathered into ``scratch`` (GROUP * BLOCK elements) and reduced by the
    channels-first kernel. Both have the channels-first bits."""
    cdef Block block = locate_block(geometry, index)
    cdef Py_ssize_t first = group * GROUP, k, run = block.rows * block.size
    cdef Py_ssize_t count = min(<Py_ssize_t>GROUP, geometry.channels - first)
    cdef const floating *start = x + at(s, block.first_row, first, block.start)
    if count == GROUP:  # a full group: reduced in place, vectorised across its channels
        if floating is float:
            kernels.moments_channels_last_float(start, s.position, s.sample, block.rows,
                                                block.size, count, mean, m2)
        else:
            kernels.moments_channels_last_double(start, s.position, s.sample, block.rows,
                                                 block.size, count, mean, m2)
        return
    gather_tile(x, s, &block, first, count, scratch)
    for k in range(count):
        if floating is float:
            kernels.moments_float(scratch + k * run, block.size, block.rows, block.size,
                                  &mean[k], &m2[k])
        else:
            kernels.moments_double(scratch + k * run, block.size, block.rows, block.size,
                                   &mean[k], &m2[k])


cdef inline void gather_tile(const floating *x, const Strides *s, const Block *block,
                             Py_ssize_t first, Py_ssize_t count,
                             floating *scratch) noexcept nogil:
    """Channels last: channels ``first .. first + count - 1`` of a block, one run each."""
    cdef const floating *start = x + at(s, block.first_row, first, block.start)
    if floating is float:
        kernels.gather_channels_float(start, s.position, s.sample, block.rows, block.size,
                                      count, scratch)
    else:
        kernels.gather_channels_double(start, s.position, s.sample, block.rows, block.size,
                                       count, scratch)


cdef inline void add_block(bn3d_moment_sums *sums, double pilot, const Geometry *geometry,
                           Py_ssize_t index, double mean, double m2) noexcept nogil:
    cdef Block block = locate_block(geometry, index)
    bn3d_moment_sums_add(sums, pilot, <double>(block.rows * block.size), mean, m2)


cdef void channel_sums(const Geometry *geometry, const floating *x, const Strides *s,
                       Py_ssize_t c, double pilot, Py_ssize_t first_block,
                       bn3d_moment_sums *sums) noexcept nogil:
    """Add the moments of channel ``c``'s blocks from ``first_block`` on into ``sums``
    (channels first)."""
    cdef Py_ssize_t index
    cdef Moments m
    for index in range(first_block, geometry.blocks):
        m = block_moments(geometry, x, s, c, index)
        bn3d_moment_sums_add(sums, pilot, m.count, m.mean, m.m2)


cdef double store_statistics(const bn3d_moment_sums *sums, double pilot,
                             const Statistics *out, Py_ssize_t c) noexcept nogil:
    """Store channel ``c``'s statistics; return its invstd."""
    cdef double mean, m2, invstd
    bn3d_moment_sums_finish(sums, pilot, &mean, &m2)
    invstd = 1.0 / sqrt(m2 / sums.count + out.eps)
    out.mean[c] = mean
    out.invstd[c] = invstd
    out.var_unbiased[c] = m2 / (sums.count - 1)
    return invstd


cdef int reduce_moments(const Geometry *geometry, const floating *x, Strides s,
                        const double *pilot, bn3d_moment_sums *sums,
                        int threads) noexcept nogil:
    """The moment sums of every channel, given its pilot. Returns -1 when out of memory."""
    cdef Py_ssize_t channels = geometry.channels, groups, item, c, t
    cdef bn3d_moment_sums *shared
    cdef floating *scratch
    cdef int team = 1 if serial(threads) else threads
    for c in range(channels):
        bn3d_moment_sums_clear(&sums[c])
    if channels == 0 or geometry.blocks == 0:
        return 0
    if not geometry.channels_last:
        if serial(threads):
            for c in range(channels):
                channel_sums(geometry, x, &s, c, pilot[c], 0, &sums[c])
        else:
            for c in prange(channels, schedule="static", num_threads=threads):
                channel_sums(geometry, x, &s, c, pilot[c], 0, &sums[c])
        return 0
    groups = groups_of(geometry)
    shared = <bn3d_moment_sums *>malloc(team * channels * sizeof(bn3d_moment_sums))
    scratch = <floating *>malloc(team * GROUP * BLOCK * sizeof(floating))
    if shared == NULL or scratch == NULL:
        free(shared)
        free(scratch)
        return -1
    for item in range(team * channels):
        bn3d_moment_sums_clear(&shared[item])
    if serial(threads):
        for item in range(geometry.blocks * groups):
            tile_sums(geometry, x, &s, item, groups, pilot, shared, scratch)
    else:
        for item in prange(geometry.blocks * groups, schedule="static", num_threads=threads):
            t = threadid()
            tile_sums(geometry, x, &s, item, groups, pilot, shared + t * channels,
                      scratch + t * GROUP * BLOCK)
    for c in range(channels):
        for t in range(team):
            bn3d_moment_sums_merge(&sums[c], &shared[t * channels + c])
    free(shared)
    free(scratch)
    return 0


cdef inline void tile_sums(const Geometry *geometry, const floating *x, const Strides *s,
                           Py_ssize_t item, Py_ssize_t groups, const double *pilot,
                           bn3d_moment_sums *sums, floating *scratch) noexcept nogil:
    """Channels last: add the moments of tile ``item`` (block ``item // groups`` of
    channel group ``item % groups``) into ``sums``."""
    cdef Py_ssize_t index = item // groups, group = item % groups, k, c
    cdef Py_ssize_t first = group * GROUP
    cdef double mean[GROUP]
    cdef double m2[GROUP]
    tile_moments(geometry, x, s, group, index, scratch, mean, m2)
    for k in range(min(<Py_ssize_t>GROUP, geometry.channels - first)):
        c = first + k
        add_block(&sums[c], pilot[c], geometry, index, mean[k], m2[k])


cdef int first_block_pilots(const Geometry *geometry, const floating *x, Strides s,
                            double *pilot, int threads) noexcept nogil:
    """The pilot of every channel: the mean of its block 0 (channels last, a group of
    channels at a time, the groups shared by the team). Returns -1 when out of memory."""
    cdef Py_ssize_t c, group
    cdef int team = 1 if serial(threads) else threads
    cdef floating *scratch
    if not geometry.channels_last:
        for c in range(geometry.channels):
            pilot[c] = bn3d_pilot(block_moments(geometry, x, &s, c, 0).mean)
        return 0
    scratch = <floating *>malloc(team * GROUP * BLOCK * sizeof(floating))
    if scratch == NULL:
        return -1
    if serial(threads):
        for group in range(groups_of(geometry)):
            group_pilots(geometry, x, &s, group, scratch, pilot)
    else:
        for group in prange(groups_of(geometry), schedule="static", num_threads=threads):
            group_pilots(geometry, x, &s, group, scratch + threadid() * GROUP * BLOCK, pilot)
    free(scratch)
    return 0


cdef inline void group_pilots(const Geometry *geometry, const floating *x, const Strides *s,
                              Py_ssize_t group, floating *scratch,
                              double *pilot) noexcept nogil:
    """Channels last: the pilots of the channels of ``group``."""
    cdef double mean[GROUP]
    cdef double m2[GROUP]
    cdef Py_ssize_t k, first = group * GROUP
    tile_moments(geometry, x, s, group, 0, scratch, mean, m2)
    for k in range(min(<Py_ssize_t>GROUP, geometry.channels - first)):
        pilot[first + k] = bn3d_pilot(mean[k])


# ==========================================================================================
# Forward: the statistics, then the normalisation
# ==========================================================================================

cdef int normalise_train(const Geometry *geometry, const floating *x, Strides xs,
                         floating *y, Strides ys, const double *weight, const double *bias,
                         const Statistics *out, int threads) noexcept nogil:
    """Each channel's statistics, then (unless ``y`` is NULL) its normalisation.

    Channels first, with many channels, each thread takes whole channels: the
    normalisation re-reads a channel that the reduction has just brought into cache;
    with few, the team shares each channel's blocks. Channels last, the team shares the
    tiles of all channels, then normalises each sample's slab. Returns -1 when out of
    memory.
    """
    cdef Py_ssize_t channels = geometry.channels, c
    cdef double *pilot
    cdef double *scale
    cdef bn3d_moment_sums *sums
    cdef int status = 0
    pilot = <double *>malloc(channels * sizeof(double))
    sums = <bn3d_moment_sums *>malloc(channels * sizeof(bn3d_moment_sums))
    scale = <double *>malloc(channels * sizeof(double))
    if pilot == NULL or sums == NULL or scale == NULL:
        status = -1
    elif geometry.blocks == 0:
        for c in range(channels):
            bn3d_moment_sums_clear(&sums[c])
            store_statistics(&sums[c], 0.0, out, c)
    elif not geometry.channels_last and (serial(threads) or by_channel(geometry, threads)):
        if serial(threads):
            for c in range(channels):
                normalise_train_channel(geometry, c, x, &xs, y, &ys, weight, bias, out, sums)
            end_streaming(geometry)
        else:
            with parallel(num_threads=threads):
                for c in prange(channels, schedule="static"):
                    normalise_train_channel(geometry, c, x, &xs, y, &ys, weight, bias, out,
                                            sums)
                end_streaming(geometry)
    elif not geometry.channels_last:
        status = normalise_train_shared(geometry, x, &xs, y, &ys, weight, bias, out, pilot,
                                        sums, threads)
    else:
        status = first_block_pilots(geometry, x, xs, pilot, threads)
        if status == 0:
            status = reduce_moments(geometry, x, xs, pilot, sums, threads)
        if status == 0:
            for c in range(channels):
                scale[c] = store_statistics(&sums[c], pilot[c], out, c)
                if weight != NULL:
                    scale[c] = weight[c] * scale[c]
            if y != NULL:
                status = normalise(geometry, x, xs, y, ys, out.mean, scale, bias, threads)
    free(pilot)
    free(sums)
    free(scale)
    return status


cdef void normalise_train_channel(const Geometry *geometry, Py_ssize_t c,
                                  const floating *x, const Strides *xs,
                                  floating *y, const Strides *ys,
                                  const double *weight, const double *bias,
                                  const Statistics *out, bn3d_moment_sums *sums) noexcept nogil:
    """Channel ``c``'s statistics, then its normalisation, on the calling thread."""
    cdef Moments first = block_moments(geometry, x, xs, c, 0)
    cdef double pilot = bn3d_pilot(first.mean), invstd
    cdef Py_ssize_t index
    bn3d_moment_sums_clear(&sums[c])
    bn3d_moment_sums_add(&sums[c], pilot, first.count, first.mean, first.m2)
    channel_sums(geometry, x, xs, c, pilot, 1, &sums[c])
    invstd = store_statistics(&sums[c], pilot, out, c)
    if y != NULL:
        for index in range(geometry.blocks):
            normalise_block(geometry, index, c, x, xs, y, ys, out.mean[c], weight[c] * invstd,
                            bias[c])


cdef int normalise_train_shared(const Geometry *geometry, const floating *x, const Strides *xs,
                                floating *y, const Strides *ys, const double *weight,
                                const double *bias, const Statistics *out, double *pilot,
                                bn3d_moment_sums *sums, int threads) noexcept nogil:
    """Channels first, few channels: the team shares each channel's blocks, each thread
    adding its blocks into its own sums. Returns -1 when out of memory."""
    cdef Py_ssize_t c, index, t
    cdef Moments first, m
    cdef double invstd
    cdef bn3d_moment_sums *shared = <bn3d_moment_sums *>malloc(
        threads * sizeof(bn3d_moment_sums))
    if shared == NULL:
        return -1
    for c in range(geometry.channels):
        first = block_moments(geometry, x, xs, c, 0)
        pilot[c] = bn3d_pilot(first.mean)
        for t in range(threads):
            bn3d_moment_sums_clear(&shared[t])
        bn3d_moment_sums_add(&shared[0], pilot[c], first.count, first.mean, first.m2)
        for index in prange(1, geometry.blocks, schedule="static", num_threads=threads):
            m = block_moments(geometry, x, xs, c, index)
            bn3d_moment_sums_add(&shared[threadid()], pilot[c], m.count, m.mean, m.m2)
        bn3d_moment_sums_clear(&sums[c])
        for t in range(threads):
            bn3d_moment_sums_merge(&sums[c], &shared[t])
        invstd = store_statistics(&sums[c], pilot[c], out, c)
        if y != NULL:
            with parallel(num_threads=threads):
                for index in prange(geometry.blocks, schedule="static"):
                    normalise_block(geometry, index, c, x, xs, y, ys, out.mean[c],
                                    weight[c] * invstd, bias[c])
                end_streaming(geometry)
    free(shared)
    return 0


cdef inline void normalise_block(const Geometry *geometry, Py_ssize_t index, Py_ssize_t c,
                                 const floating *x, const Strides *xs,
                                 floating *y, const Strides *ys,
                                 double mean, double scale, double shift) noexcept nogil:
    """Channels first: y = (x - mean) * scale + shift on block ``index`` of channel ``c``."""
    cdef Block block = locate_block(geometry, index)
    if floating is float:
        kernels.affine_float(x + at(xs, block.first_row, c, block.start), xs.sample,
                             y + at(ys, block.first_row, c, block.start), ys.sample, block.rows,
                             block.size, mean, scale, shift, geometry.stream)
    else:
        kernels.affine_double(x + at(xs, block.first_row, c, block.start), xs.sample,
                              y + at(ys, block.first_row, c, block.start), ys.sample, block.rows,
                              block.size, mean, scale, shift, geometry.stream)


cdef int normalise(const Geometry *geometry, const floating *x, Strides xs,
                   floating *y, Strides ys, const double *mean, const double *scale,
                   const double *shift, int threads) noexcept nogil:
    """out = (x - mean) * scale + shift per channel, the work shared by the team.

    Channels first, short rows are taken in (n, c) order, memory order for a contiguous
    array, so that each thread reads one stream rather than one short stream per row.
    Channels last, each sample's slab is one periodic map. Returns -1 when out of
    memory.
    """
    cdef Py_ssize_t item, items
    cdef floating *constants = NULL
    if geometry.blocks == 0:
        return 0
    if geometry.channels_last:
        constants = <floating *>malloc(4 * (geometry.channels + GROUP) * sizeof(floating))
        if constants == NULL:
            return -1
        periodic_affine_constants(geometry.channels, mean, scale, shift, constants)
        items = geometry.batch * slab_chunks(geometry)
    elif geometry.rows_per_block > 1:
        items = row_chunks(geometry)
    else:
        items = geometry.channels * geometry.blocks
    if serial(threads):
        for item in range(items):
            normalise_item(geometry, item, x, &xs, y, &ys, mean, scale, shift, constants)
        end_streaming(geometry)
    else:
        with parallel(num_threads=threads):
            for item in prange(items, schedule="static"):
                normalise_item(geometry, item, x, &xs, y, &ys, mean, scale, shift, constants)
            end_streaming(geometry)
    free(constants)
    return 0


cdef inline void normalise_item(const Geometry *geometry, Py_ssize_t item,
                                const floating *x, const Strides *xs,
                                floating *y, const Strides *ys,
                                const double *mean, const double *scale, const double *shift,
                                const floating *constants) noexcept nogil:
    """Work item ``item`` of ``normalise``: a chunk of a slab (channels last), a chunk of
    ``rows_per_block`` short rows counted in (n, c) order, or block ``item % blocks`` of
    channel ``item // blocks``."""
    cdef Py_ssize_t first, last, c, n, chunk, start, count, period
    if geometry.channels_last:
        n = item // slab_chunks(geometry)
        chunk = item % slab_chunks(geometry)
        period = geometry.channels + GROUP
        start = chunk * SLAB_CHUNK
        count = min(<Py_ssize_t>SLAB_CHUNK, geometry.length * geometry.channels - start)
        if floating is float:
            kernels.affine_periodic_float(x + n * xs.sample + start, y + n * ys.sample + start,
                                          count, geometry.channels, start % geometry.channels,
                                          constants, constants + period, constants + 2 * period,
                                          constants + 3 * period, geometry.stream)
        else:
            kernels.affine_periodic_double(x + n * xs.sample + start, y + n * ys.sample + start,
                                           count, geometry.channels, start % geometry.channels,
                                           constants, constants + period, constants + 2 * period,
                                           constants + 3 * period, geometry.stream)
    elif geometry.rows_per_block > 1:
        first = item * geometry.rows_per_block
        last = chunk_end(geometry, first)
        if floating is float:
            kernels.affine_rows_float(x, xs.sample, xs.channel, y, ys.sample, ys.channel,
                                      geometry.channels, geometry.length, first, last, mean, scale,
                                      shift, geometry.stream)
        else:
            kernels.affine_rows_double(x, xs.sample, xs.channel, y, ys.sample, ys.channel,
                                       geometry.channels, geometry.length, first, last, mean, scale,
                                       shift, geometry.stream)
    else:
        c = item // geometry.blocks
        normalise_block(geometry, item % geometry.blocks, c, x, xs, y, ys, mean[c], scale[c],
                        shift[c])


cdef inline Py_ssize_t row_chunks(const Geometry *geometry) noexcept nogil:
    """Chunks of ``rows_per_block`` short rows, the rows counted in (n, c) order."""
    return ((geometry.batch * geometry.channels + geometry.rows_per_block - 1)
            // geometry.rows_per_block)


cdef inline Py_ssize_t chunk_end(const Geometry *geometry, Py_ssize_t first) noexcept nogil:
    """One past the last row of the chunk that starts at row ``first``."""
    return min(first + geometry.rows_per_block, geometry.batch * geometry.channels)


cdef inline Py_ssize_t slab_chunks(const Geometry *geometry) noexcept nogil:
    """Channels last: the work items of one sample's slab."""
    return (geometry.length * geometry.channels + SLAB_CHUNK - 1) // SLAB_CHUNK


cdef void periodic_affine_constants(Py_ssize_t channels, const double *mean,
                                    const double *scale, const double *shift,
                                    floating *constants) noexcept nogil:
    """The affine map's constants (mean_hi, mean_lo, scale, shift) of each channel in the
    data's precision, into four arrays of ``channels + GROUP`` entries repeating the
    channels (what the periodic maps read)."""
    cdef Py_ssize_t period = channels + GROUP, j, c
    cdef floating k[4]
    for j in range(period):
        c = j % channels
        if floating is float:
            kernels.affine_constants_float(mean[c], scale[c], shift[c], k)
        else:
            kernels.affine_constants_double(mean[c], scale[c], shift[c], k)
        constants[j] = k[0]
        constants[period + j] = k[1]
        constants[2 * period + j] = k[2]
        constants[3 * period + j] = k[3]


# ==========================================================================================
# Backward: the gradient sums, then grad_input
# ==========================================================================================

cdef struct Gradients:
    # Per-channel inputs and outputs of a backward.
    const double *weight
    const double *mean      # the mean that normalised
    const double *invstd    # the 1 / std that normalised
    double *grad_weight
    double *grad_bias


cdef struct GradInputConstants:
    # grad_input = (g - grad_mean - (x - mean) * grad_coefficient) * scale
    double mean
    double scale
    double grad_mean            # mean of g
    double grad_coefficient     # invstd**2 * mean of g * (x - mean)


cdef inline Gradients gradient_outputs(const double[::1] mean, const double[::1] invstd,
                                       const double[::1] weight, double[::1] grad_weight,
                                       double[::1] grad_bias):
    cdef Gradients out
    out.mean = &mean[0] if mean.shape[0] else NULL
    out.invstd = &invstd[0] if invstd.shape[0] else NULL
    out.weight = &weight[0] if weight.shape[0] else NULL
    out.grad_weight = &grad_weight[0] if grad_weight.shape[0] else NULL
    out.grad_bias = &grad_bias[0] if grad_bias.shape[0] else NULL
    return out


cdef GradInputConstants grad_input_constants_of(const bn3d_gradient_totals *sums,
                                                const Gradients *gradients,
                                                Py_ssize_t c) noexcept nogil:
    cdef GradInputConstants k
    cdef double invstd = gradients.invstd[c]
    cdef double sum = bn3d_exact_value(&sums.sum), dot = bn3d_exact_value(&sums.dot)
    k.mean = gradients.mean[c]
    k.scale = gradients.weight[c] * invstd
    k.grad_mean = sum / sums.count
    k.grad_coefficient = invstd * invstd * (dot / sums.count)
    return k


cdef GradInputConstants store_gradients(const bn3d_gradient_totals *sums,
                                        const Gradients *gradients,
                                        Py_ssize_t c) noexcept nogil:
    """Store channel ``c``'s parameter gradients; return its grad_input constants."""
    cdef double dot = bn3d_exact_value(&sums.dot)
    gradients.grad_bias[c] = bn3d_exact_value(&sums.sum)
    # A sum over no elements is 0, even where invstd is NaN (an empty batch).
    gradients.grad_weight[c] = dot * gradients.invstd[c] if sums.count > 0 else 0.0
    return grad_input_constants_of(sums, gradients, c)


cdef int backward(const Geometry *geometry, const floating *g, Strides gs,
                  const floating *x, Strides xs, floating *out, Strides os,
                  const Gradients *gradients, bint batch_stats, int threads) noexcept nogil:
    """The gradient sums of every channel, the parameter gradients, then grad_input:
    through the batch statistics (``batch_stats``) or fixed ones (``g * scale``).

    Channels first with long rows, as ``normalise_train``: with many channels each
    thread takes whole channels, summing a channel then computing its grad_input while
    it is in cache; with few, the team shares each channel. Otherwise (short rows in
    memory order, channels last) all sums first, then all of grad_input. Returns -1
    when out of memory.
    """
    cdef Py_ssize_t channels = geometry.channels, c, index, t
    cdef bint long_rows = not geometry.channels_last and geometry.rows_per_block == 1
    cdef bn3d_gradient_totals *sums = <bn3d_gradient_totals *>malloc(
        channels * sizeof(bn3d_gradient_totals))
    cdef bn3d_gradient_totals *shared = <bn3d_gradient_totals *>malloc(
        max(1, threads) * sizeof(bn3d_gradient_totals))
    cdef GradInputConstants *constants = <GradInputConstants *>malloc(
        channels * sizeof(GradInputConstants))
    cdef floating *k = <floating *>malloc(4 * (channels + GROUP) * sizeof(floating))
    cdef int status = 0
    if sums == NULL or shared == NULL or constants == NULL or k == NULL:
        status = -1
    elif long_rows and geometry.blocks > 0 and (serial(threads) or by_channel(geometry, threads)):
        if serial(threads):
            for c in range(channels):
                backward_channel(geometry, c, g, &gs, x, &xs, out, &os, gradients, batch_stats,
                                 sums, k)
            end_streaming(geometry)
        else:
            with parallel(num_threads=threads):
                for c in prange(channels, schedule="static"):
                    backward_channel(geometry, c, g, &gs, x, &xs, out, &os, gradients,
                                     batch_stats, sums, k)
                end_streaming(geometry)
    elif long_rows and geometry.blocks > 0:
        for c in range(channels):
            for t in range(threads):
                bn3d_gradient_totals_clear(&shared[t])
            for index in prange(geometry.blocks, schedule="static", num_threads=threads):
                block_gradient_sums(geometry, index, c, g, &gs, x, &xs, gradients.mean[c],
                                    &shared[threadid()])
            bn3d_gradient_totals_clear(&sums[c])
            for t in range(threads):
                bn3d_gradient_totals_merge(&sums[c], &shared[t])
            constants[c] = store_gradients(&sums[c], gradients, c)
            grad_input_constants(&constants[c], k + 4 * c)
            with parallel(num_threads=threads):
                for index in prange(geometry.blocks, schedule="static"):
                    if batch_stats:
                        grad_input_block(geometry, index, c, g, &gs, x, &xs, out, &os,
                                         k + 4 * c)
                    else:
                        normalise_block(geometry, index, c, g, &gs, out, &os, 0.0,
                                        constants[c].scale, 0.0)
                end_streaming(geometry)
    else:
        status = reduce_gradients(geometry, g, gs, x, xs, gradients.mean, sums, threads)
        if status == 0:
            for c in range(channels):
                constants[c] = store_gradients(&sums[c], gradients, c)
            if geometry.blocks > 0:
                status = grad_input_pass(geometry, g, gs, x, xs, out, os, constants,
                                         batch_stats, threads)
    free(sums)
    free(shared)
    free(constants)
    free(k)
    return status


cdef void backward_channel(const Geometry *geometry, Py_ssize_t c,
                           const floating *g, const Strides *gs,
                           const floating *x, const Strides *xs,
                           floating *out, const Strides *os, const Gradients *gradients,
                           bint batch_stats, bn3d_gradient_totals *sums,
                           floating *k) noexcept nogil:
    """Channel ``c``'s gradient sums, parameter gradients, then grad_input, on the
    calling thread (channels first, long rows)."""
    cdef Py_ssize_t index
    cdef GradInputConstants constants
    bn3d_gradient_totals_clear(&sums[c])
    for index in range(geometry.blocks):
        block_gradient_sums(geometry, index, c, g, gs, x, xs, gradients.mean[c], &sums[c])
    constants = store_gradients(&sums[c], gradients, c)
    grad_input_constants(&constants, k + 4 * c)
    for index in range(geometry.blocks):
        if batch_stats:
            grad_input_block(geometry, index, c, g, gs, x, xs, out, os, k + 4 * c)
        else:
            normalise_block(geometry, index, c, g, gs, out, os, 0.0, constants.scale, 0.0)


cdef inline void block_gradient_sums(const Geometry *geometry, Py_ssize_t index, Py_ssize_t c,
                                     const floating *g, const Strides *gs,
                                     const floating *x, const Strides *xs, double mean,
                                     bn3d_gradient_totals *sums) noexcept nogil:
    """Add the gradient sums of block ``index`` of channel ``c`` (a segment of a long
    row) into ``sums``."""
    cdef Block block = locate_block(geometry, index)
    cdef double sum, dot
    if floating is float:
        kernels.gradient_sums_float(g + at(gs, block.first_row, c, block.start),
                                    x + at(xs, block.first_row, c, block.start), block.size,
                                    mean, &sum, &dot)
    else:
        kernels.gradient_sums_double(g + at(gs, block.first_row, c, block.start),
                                     x + at(xs, block.first_row, c, block.start), block.size,
                                     mean, &sum, &dot)
    bn3d_gradient_totals_add(sums, <double>block.size, sum, dot)


cdef int grad_input_pass(const Geometry *geometry, const floating *g, Strides gs,
                         const floating *x, Strides xs, floating *out, Strides os,
                         const GradInputConstants *constants, bint batch_stats,
                         int threads) noexcept nogil:
    """grad_input of every channel: through the batch statistics, or ``g * scale``
    through fixed ones. Returns -1 when out of memory."""
    cdef Py_ssize_t c
    cdef double *zeros
    cdef double *scale
    cdef int status
    if batch_stats:
        return apply_grad_input(geometry, g, gs, x, xs, out, os, constants, threads)
    zeros = <double *>calloc(geometry.channels, sizeof(double))
    scale = <double *>malloc(geometry.channels * sizeof(double))
    status = -1
    if zeros != NULL and scale != NULL:
        for c in range(geometry.channels):
            scale[c] = constants[c].scale
        status = normalise(geometry, g, gs, out, os, zeros, scale, zeros, threads)
    free(zeros)
    free(scale)
    return status


cdef inline void grad_input_constants(const GradInputConstants *constants,
                                      floating *k) noexcept nogil:
    """The constants of the grad_input map in the data's precision, into ``k[0:4]``."""
    if floating is float:
        kernels.grad_input_constants_float(constants.mean, constants.grad_mean,
                                           constants.grad_coefficient, constants.scale, k)
    else:
        kernels.grad_input_constants_double(constants.mean, constants.grad_mean,
                                            constants.grad_coefficient, constants.scale, k)


cdef inline void grad_input_block(const Geometry *geometry, Py_ssize_t index, Py_ssize_t c,
                                  const floating *g, const Strides *gs,
                                  const floating *x, const Strides *xs,
                                  floating *out, const Strides *os,
                                  const floating *k) noexcept nogil:
    """grad_input on block ``index`` of channel ``c`` (channels first)."""
    cdef Block block = locate_block(geometry, index)
    if floating is float:
        kernels.grad_input_float(g + at(gs, block.first_row, c, block.start), gs.sample,
                                 x + at(xs, block.first_row, c, block.start), xs.sample,
                                 out + at(os, block.first_row, c, block.start), os.sample,
                                 block.rows, block.size, k, geometry.stream)
    else:
        kernels.grad_input_double(g + at(gs, block.first_row, c, block.start), gs.sample,
                                  x + at(xs, block.first_row, c, block.start), xs.sample,
                                  out + at(os, block.first_row, c, block.start), os.sample,
                                  block.rows, block.size, k, geometry.stream)


cdef int reduce_gradients(const Geometry *geometry, const floating *g, Strides gs,
                          const floating *x, Strides xs, const double *mean,
                          bn3d_gradient_totals *sums, int threads) noexcept nogil:
    """The gradient sums of every channel, each thread adding its blocks into its own
    sums. Channels first with long rows the work items are (channel, block); with
    short rows, groups of rows for all channels at once, in memory order; channels last,
    (block, channel group). Returns -1 when out of memory."""
    cdef Py_ssize_t channels = geometry.channels, c, t, item, items
    cdef int team = 1 if serial(threads) else threads
    cdef bn3d_gradient_totals *shared
    cdef double *scratch
    cdef floating *tiles = NULL
    cdef Py_ssize_t tile = 2 * GROUP * BLOCK if geometry.channels_last else 0
    for c in range(channels):
        bn3d_gradient_totals_clear(&sums[c])
    if channels == 0 or geometry.blocks == 0:
        return 0
    shared = <bn3d_gradient_totals *>malloc(team * channels * sizeof(bn3d_gradient_totals))
    scratch = <double *>malloc(team * 2 * channels * sizeof(double))
    if geometry.channels_last:
        tiles = <floating *>malloc(team * tile * sizeof(floating))
    if shared == NULL or scratch == NULL or (geometry.channels_last and tiles == NULL):
        free(shared)
        free(scratch)
        free(tiles)
        return -1
    for item in range(team * channels):
        bn3d_gradient_totals_clear(&shared[item])
    if geometry.channels_last:
        items = geometry.blocks * groups_of(geometry)
    elif geometry.rows_per_block > 1:
        items = geometry.blocks
    else:
        items = channels * geometry.blocks
    if serial(threads):
        for item in range(items):
            gradient_item(geometry, item, g, &gs, x, &xs, mean, shared, scratch, tiles)
    else:
        for item in prange(items, schedule="static", num_threads=threads):
            t = threadid()
            gradient_item(geometry, item, g, &gs, x, &xs, mean, shared + t * channels,
                          scratch + t * 2 * channels, tiles + t * tile if tile else NULL)
    for c in range(channels):
        for t in range(team):
            bn3d_gradient_totals_merge(&sums[c], &shared[t * channels + c])
    free(shared)
    free(scratch)
    free(tiles)
    return 0


cdef inline void gradient_item(const Geometry *geometry, Py_ssize_t item,
                               const floating *g, const Strides *gs,
                               const floating *x, const Strides *xs, const double *mean,
                               bn3d_gradient_totals *sums, double *scratch,
                               floating *tiles) noexcept nogil:
    """Add the gradient sums of work item ``item`` of ``reduce_gradients`` into ``sums``
    (``scratch``: 2 C doubles; ``tiles``, channels last: 2 GROUP BLOCK elements)."""
    cdef Py_ssize_t channels = geometry.channels, groups, group, first, count, k, c, r, run
    cdef Block block
    cdef double *block_sum = scratch
    cdef double *block_dot = scratch + channels
    if geometry.channels_last:
        # Gathered into one run per channel, then summed as channels first sums it.
        groups = groups_of(geometry)
        group = item % groups
        block = locate_block(geometry, item // groups)
        first = group * GROUP
        count = min(<Py_ssize_t>GROUP, channels - first)
        run = block.rows * block.size
        if count == GROUP:  # a full group: summed in place, vectorised across its channels
            for k in range(count):
                block_sum[k] = 0.0
                block_dot[k] = 0.0
            for r in range(block.first_row, block.first_row + block.rows):
                gradient_run_channels_last(g + at(gs, r, first, block.start), gs.position,
                                           x + at(xs, r, first, block.start), xs.position,
                                           block.size, count, mean + first, block_sum,
                                           block_dot, geometry.rows_per_block > 1)
            for k in range(count):
                bn3d_gradient_totals_add(&sums[first + k], <double>run, block_sum[k],
                                         block_dot[k])
            return
        gather_tile(g, gs, &block, first, count, tiles)
        gather_tile(x, xs, &block, first, count, tiles + GROUP * BLOCK)
        for k in range(count):
            block_sum[k] = 0.0
            block_dot[k] = 0.0
            run_gradient_sums(geometry, &block, tiles + k * run, tiles + GROUP * BLOCK + k * run,
                              mean[first + k], &block_sum[k], &block_dot[k])
            bn3d_gradient_totals_add(&sums[first + k], <double>run, block_sum[k], block_dot[k])
    elif geometry.rows_per_block > 1:
        block = locate_block(geometry, item)
        for c in range(channels):
            block_sum[c] = 0.0
            block_dot[c] = 0.0
        if floating is float:
            kernels.gradient_rows_float(g, gs.sample, gs.channel, x, xs.sample, xs.channel,
                                        channels, geometry.length, block.first_row,
                                        block.first_row + block.rows, mean, block_sum, block_dot)
        else:
            kernels.gradient_rows_double(g, gs.sample, gs.channel, x, xs.sample, xs.channel,
                                         channels, geometry.length, block.first_row,
                                         block.first_row + block.rows, mean, block_sum, block_dot)
        for c in range(channels):
            bn3d_gradient_totals_add(&sums[c], <double>(block.rows * block.size), block_sum[c],
                                     block_dot[c])
    else:
        c = item // geometry.blocks
        block_gradient_sums(geometry, item % geometry.blocks, c, g, gs, x, xs, mean[c],
                            &sums[c])


cdef inline void gradient_run_channels_last(const floating *g, Py_ssize_t g_stride,
                                            const floating *x, Py_ssize_t x_stride,
                                            Py_ssize_t size, Py_ssize_t count,
                                            const double *mean, double *block_sum,
                                            double *block_dot, bint add) noexcept nogil:
    """Channels last: one row's gradient sums for ``count`` channels, added into the
    block's, from zero (``add``: short rows, as channels first adds them) or stored as
    them (a segment of a long row)."""
    cdef double sum[GROUP]
    cdef double dot[GROUP]
    cdef Py_ssize_t k
    if floating is float:
        kernels.gradient_sums_channels_last_float(g, g_stride, x, x_stride, size, count, mean,
                                                  sum, dot)
    else:
        kernels.gradient_sums_channels_last_double(g, g_stride, x, x_stride, size, count,
                                                   mean, sum, dot)
    for k in range(count):
        if add:
            block_sum[k] += sum[k]
            block_dot[k] += dot[k]
        else:
            block_sum[k] = sum[k]
            block_dot[k] = dot[k]


cdef inline void run_gradient_sums(const Geometry *geometry, const Block *block,
                                   const floating *g, const floating *x, double mean,
                                   double *sum, double *dot) noexcept nogil:
    """The gradient sums of one channel's gathered block, as channels first takes them: a
    segment of a long row in one run; short rows one by one, added from zero in order."""
    cdef double mean_of_channel = mean
    if geometry.rows_per_block == 1:
        if floating is float:
            kernels.gradient_sums_float(g, x, block.size, mean, sum, dot)
        else:
            kernels.gradient_sums_double(g, x, block.size, mean, sum, dot)
    elif floating is float:
        kernels.gradient_rows_float(g, block.size, 0, x, block.size, 0, 1, block.size, 0,
                                    block.rows, &mean_of_channel, sum, dot)
    else:
        kernels.gradient_rows_double(g, block.size, 0, x, block.size, 0, 1, block.size, 0,
                                     block.rows, &mean_of_channel, sum, dot)


cdef int apply_grad_input(const Geometry *geometry, const floating *g, Strides gs,
                          const floating *x, Strides xs, floating *out, Strides os,
                          const GradInputConstants *constants, int threads) noexcept nogil:
    """grad_input from each channel's constants, the work shared by the team as in
    ``normalise``. Returns -1 when out of memory."""
    cdef Py_ssize_t channels = geometry.channels, period = channels + GROUP
    cdef Py_ssize_t item, items, j, c
    cdef floating *k = <floating *>malloc(4 * period * sizeof(floating))
    cdef floating one[4]
    if k == NULL:
        return -1
    # channels first: k[4 c .. 4 c + 4]; channels last: four arrays of `period` entries
    for j in range(period if geometry.channels_last else channels):
        c = j % channels
        if geometry.channels_last:
            grad_input_constants(&constants[c], one)
            k[j] = one[0]
            k[period + j] = one[1]
            k[2 * period + j] = one[2]
            k[3 * period + j] = one[3]
        else:
            grad_input_constants(&constants[c], k + 4 * c)
    if geometry.channels_last:
        items = geometry.batch * slab_chunks(geometry)
    elif geometry.rows_per_block > 1:
        items = row_chunks(geometry)
    else:
        items = channels * geometry.blocks
    if serial(threads):
        for item in range(items):
            grad_input_item(geometry, item, g, &gs, x, &xs, out, &os, k)
        end_streaming(geometry)
    else:
        with parallel(num_threads=threads):
            for item in prange(items, schedule="static"):
                grad_input_item(geometry, item, g, &gs, x, &xs, out, &os, k)
            end_streaming(geometry)
    free(k)
    return 0


cdef inline void grad_input_item(const Geometry *geometry, Py_ssize_t item,
                                 const floating *g, const Strides *gs,
                                 const floating *x, const Strides *xs,
                                 floating *out, const Strides *os,
                                 const floating *k) noexcept nogil:
    """Work item ``item`` of ``apply_grad_input`` (the items of ``normalise``)."""
    cdef Py_ssize_t first, last, c, n, chunk, start, count
    cdef Py_ssize_t period = geometry.channels + GROUP
    if geometry.channels_last:
        n = item // slab_chunks(geometry)
        chunk = item % slab_chunks(geometry)
        start = chunk * SLAB_CHUNK
        count = min(<Py_ssize_t>SLAB_CHUNK, geometry.length * geometry.channels - start)
        if floating is float:
            kernels.grad_input_periodic_float(g + n * gs.sample + start, x + n * xs.sample + start,
                                              out + n * os.sample + start, count,
                                              geometry.channels, start % geometry.channels,
                                              k, k + period, k + 2 * period, k + 3 * period,
                                              geometry.stream)
        else:
            kernels.grad_input_periodic_double(g + n * gs.sample + start, x + n * xs.sample + start,
                                               out + n * os.sample + start, count,
                                               geometry.channels, start % geometry.channels,
                                               k, k + period, k + 2 * period, k + 3 * period,
                                               geometry.stream)
    elif geometry.rows_per_block > 1:
        first = item * geometry.rows_per_block
        last = chunk_end(geometry, first)
        if floating is float:
            kernels.grad_input_rows_float(g, gs.sample, gs.channel, x, xs.sample, xs.channel, out,
                                          os.sample, os.channel, geometry.channels, geometry.length,
                                          first, last, k, geometry.stream)
        else:
            kernels.grad_input_rows_double(g, gs.sample, gs.channel, x, xs.sample, xs.channel, out,
                                           os.sample, os.channel, geometry.channels,
                                           geometry.length, first, last, k, geometry.stream)
    else:
        c = item // geometry.blocks
        grad_input_block(geometry, item % geometry.blocks, c, g, gs, x, xs, out, os, k + 4 * c)


# ==========================================================================================
# Partial sums as int64 words: a channel's count (a double's bits), then two exact sums
# (its low, high, special and pending fields, then its limbs).
# ==========================================================================================

cdef enum:
    SUM_WORDS = 4 + BN3D_EXACT_LIMBS
    PARTIAL_WORDS = 1 + 2 * SUM_WORDS


cdef inline void pack_sum(const bn3d_exact_sum *s, long long *words) noexcept nogil:
    cdef bn3d_exact_sum t = s[0]
    cdef int k
    bn3d_exact_normalise(&t)
    words[0] = t.low
    words[1] = t.high
    words[2] = t.special
    words[3] = 0
    for k in range(BN3D_EXACT_LIMBS):
        words[4 + k] = t.limb[k] if t.low <= k < t.high else 0


cdef inline void unpack_sum(const long long *words, bn3d_exact_sum *s) noexcept nogil:
    cdef int k
    s.low = <int>words[0]
    s.high = <int>words[1]
    s.special = <unsigned int>words[2]
    s.pending = 0
    for k in range(BN3D_EXACT_LIMBS):
        s.limb[k] = words[4 + k]


cdef inline void pack_moment_sums(const bn3d_moment_sums *sums, long long *words) noexcept nogil:
    memcpy(words, &sums.count, sizeof(double))
    pack_sum(&sums.deviation, words + 1)
    pack_sum(&sums.scatter, words + 1 + SUM_WORDS)


cdef inline void unpack_moment_sums(const long long *words, bn3d_moment_sums *sums) noexcept nogil:
    memcpy(&sums.count, words, sizeof(double))
    unpack_sum(words + 1, &sums.deviation)
    unpack_sum(words + 1 + SUM_WORDS, &sums.scatter)


cdef inline void pack_gradient_totals(const bn3d_gradient_totals *sums,
                                      long long *words) noexcept nogil:
    memcpy(words, &sums.count, sizeof(double))
    pack_sum(&sums.sum, words + 1)
    pack_sum(&sums.dot, words + 1 + SUM_WORDS)


cdef inline void unpack_gradient_totals(const long long *words,
                                        bn3d_gradient_totals *sums) noexcept nogil:
    memcpy(&sums.count, words, sizeof(double))
    unpack_sum(words + 1, &sums.sum)
    unpack_sum(words + 1 + SUM_WORDS, &sums.dot)
