# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Scheduling of bn3d's kernels: blocks, threads and the order of every reduction.

The arithmetic on data lives in C (``bn3d/_src``: ``moments.h``, ``gradient_sums.h``,
``maps.h``, compiled once per instruction set); this module decides which blocks of
which arrays they run on, on which threads, and in which order their partial results
are combined. Its callers (:mod:`bn3d._core`) validate every array; the kernels trust
them.

Where to find what
------------------
- Entry points (Python): ``batch_stats`` (statistics), ``train_forward`` and
  ``eval_forward`` (forward), ``train_backward`` and ``eval_backward`` (backward),
  ``update_running_stats``, ``inverse_std``; build and thread information.
- Statistics: the moments of a block, of a superblock, of a channel (``Moments``).
- Forward: per channel, the moments then the normalisation (``normalise_train``);
  the normalisation alone (``normalise_channels``).
- Backward: the gradient sums (``GradientSums``) then grad_input
  (``backward_train``); short rows in memory order (``backward_short_rows``).

Data layout
-----------
Every array is seen as ``(N, C, L)``: batch, channel and the flattened spatial extent,
with unit stride along ``L`` and any strides along ``N`` and ``C``. The elements of
one channel are cut into *blocks* of about ``BLOCK`` (2048) elements: segments of at
most ``BLOCK`` elements of one row ``(n, c, :)`` when rows are long, or ``BLOCK // L``
whole consecutive rows when they are short. The blocks of a channel are grouped, in
order, into at most ``MAX_SUPERBLOCKS`` (64) *superblocks*. The gradient sums of short
rows are taken row by row in memory order instead: the batch is cut into at most 64
*batch groups* of consecutive ``n``, each summed for every channel at once.

Passes over large arrays write their output with non-temporal stores (a call streams
when its arrays together are larger than the last-level cache,
``set_stream_threshold``), where cached stores would only evict its input. The stores
are the widest the CPU has (``store_width``): the kernels are built for AVX-512, AVX2
and baseline x86-64, and the module picks one version when it loads.

Numerics
--------
Statistics accumulate in double precision. Each block is reduced with the corrected
two-pass algorithm while it sits in L1 cache (``moments.h``), and blocks are combined
with the pairwise update of Chan, Golub and LeVeque: first block by block within a
superblock, then superblock by superblock, always in index order. No sum ever
subtracts two large uncentred quantities, so the variance stays accurate when
``|mean|`` is far larger than the standard deviation, and a constant channel has a
mean equal to its value and a variance of exactly zero. An inf in a channel makes its
mean infinite and its variance NaN, as in PyTorch.

The normalised output is computed in the data's precision from per-channel constants
in double (``maps.h``), the mean split in two values of the data's type so that the
centring is nearly exact. The gradient sums of float32 data are taken in float over
runs of 128 elements added into double lanes (``gradient_sums.h``); the channel sums
are double. Streamed or not, an output holds the same bits.

Determinism
-----------
The blocks, the superblocks, the batch groups and the order in which they are
combined depend on the shape alone, never on the number of threads or on which thread
does what, so every result is bitwise identical whatever the team size. The code is
built without ``-ffast-math`` and with ``-ffp-contract=off``: NaN and inf propagate
and no fused multiply-add changes the rounding from one instruction set to another.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport NAN, isfinite, sqrt
from libc.stdlib cimport calloc, free, malloc

cdef extern from *:
    """
    #ifndef BN3D_BUILD_FLAGS
    #define BN3D_BUILD_FLAGS ""
    #endif
    """
    const char *BN3D_BUILD_FLAGS

cdef enum:
    BLOCK = 2048
    MAX_SUPERBLOCKS = 64
    # A pass runs channel by channel, each channel on one thread, when there are at
    # least this many channels per thread (or they divide evenly).
    CHANNELS_PER_THREAD = 8

# The kernels of the widest instruction set this CPU has (see set_store_width).
cdef int cpu_store_bytes = bn3d_cpu_store_bytes()
cdef const bn3d_kernel_table *kernels = bn3d_kernels_for(cpu_store_bytes)
# Output passes of calls whose arrays hold more than this many bytes in all use
# non-temporal stores (set from the last-level cache size by bn3d._cache).
cdef Py_ssize_t stream_above = 32 * 1024 * 1024


# ==========================================================================================
# Entry points. Arrays are (N, C, L) with unit stride along L (checked by the caller);
# per-channel arrays are contiguous float64 of length C.
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


# -- statistics ----------------------------------------------------------------------------


def batch_stats(const floating[:, :, :] x, double eps,
                double[::1] mean, double[::1] invstd, double[::1] var_unbiased, int threads):
    """Batch statistics of ``x`` alone, bitwise equal to those of ``train_forward``:
    the mean, ``1 / sqrt(biased variance + eps)`` and the unbiased variance of each
    channel (NaN for an empty channel; the unbiased variance of one value is NaN)."""
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2], 0)
    cdef Statistics out
    cdef int status = 0
    if geometry.channels == 0:
        return
    out.mean = &mean[0]
    out.invstd = &invstd[0]
    out.var_unbiased = &var_unbiased[0]
    if geometry.blocks == 0:
        statistics_of_empty_channels(geometry.channels, eps, &out)
        return
    with nogil:
        status = reduce_moments(&geometry, &x[0, 0, 0], batch_stride(x), channel_stride(x),
                                eps, &out, threads)
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


def train_forward(const floating[:, :, :] x, floating[:, :, :] y,
                  const double[::1] weight, const double[::1] bias, double eps,
                  double[::1] mean, double[::1] invstd, double[::1] var_unbiased,
                  int threads):
    """Normalise ``x`` into ``y`` with its batch statistics, and store them as
    ``batch_stats`` does."""
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           2 * <Py_ssize_t>sizeof(floating))
    cdef Statistics out
    cdef int status
    if geometry.channels == 0:
        return
    out.mean = &mean[0]
    out.invstd = &invstd[0]
    out.var_unbiased = &var_unbiased[0]
    if geometry.blocks == 0:
        statistics_of_empty_channels(geometry.channels, eps, &out)
        return
    with nogil:
        status = normalise_train(&geometry, &x[0, 0, 0], batch_stride(x), channel_stride(x),
                                 &y[0, 0, 0], batch_stride(y), channel_stride(y),
                                 &weight[0], &bias[0], eps, &out, threads)
    if status != 0:
        raise MemoryError()


def eval_forward(const floating[:, :, :] x, floating[:, :, :] y,
                 const double[::1] mean, const double[::1] var,
                 const double[::1] weight, const double[::1] bias, double eps,
                 double[::1] invstd, int threads):
    """Normalise ``x`` into ``y`` with given statistics ``mean`` and ``var``; store
    ``1 / sqrt(var + eps)`` of each channel in ``invstd``."""
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           2 * <Py_ssize_t>sizeof(floating))
    cdef Py_ssize_t c, channels = geometry.channels
    cdef double *scale
    if channels == 0:
        return
    scale = <double *>malloc(channels * sizeof(double))
    if scale == NULL:
        raise MemoryError()
    for c in range(channels):
        invstd[c] = 1.0 / sqrt(var[c] + eps)
        scale[c] = weight[c] * invstd[c]
    if geometry.blocks > 0:
        with nogil:
            normalise_channels(&geometry, &x[0, 0, 0], batch_stride(x), channel_stride(x),
                               &y[0, 0, 0], batch_stride(y), channel_stride(y),
                               &mean[0], scale, &bias[0], threads)
    free(scale)


# -- backward ------------------------------------------------------------------------------


def train_backward(const floating[:, :, :] grad_output, const floating[:, :, :] x,
                   floating[:, :, :] grad_input,
                   const double[::1] mean, const double[::1] invstd, const double[::1] weight,
                   double[::1] grad_weight, double[::1] grad_bias, int threads):
    """Gradients of a batch-statistics forward (mean and invstd from the batch):
    ``grad_input = w * invstd / n * (n * g - sum(g) - xhat * sum(g * xhat))``,
    ``grad_weight = sum(g * xhat)``, ``grad_bias = sum(g)``."""
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           3 * <Py_ssize_t>sizeof(floating))
    cdef Gradients out
    cdef int status
    if geometry.channels == 0:
        return
    out.weight = &weight[0]
    out.mean = &mean[0]
    out.invstd = &invstd[0]
    out.grad_weight = &grad_weight[0]
    out.grad_bias = &grad_bias[0]
    if geometry.blocks == 0:
        gradients_of_empty_channels(geometry.channels, &out)
        return
    with nogil:
        status = backward_train(&geometry, &x[0, 0, 0], batch_stride(x), channel_stride(x),
                                &grad_output[0, 0, 0], batch_stride(grad_output),
                                channel_stride(grad_output),
                                &grad_input[0, 0, 0], batch_stride(grad_input),
                                channel_stride(grad_input), &out, threads)
    if status != 0:
        raise MemoryError()


def eval_backward(const floating[:, :, :] grad_output, const floating[:, :, :] x,
                  floating[:, :, :] grad_input,
                  const double[::1] mean, const double[::1] invstd, const double[::1] weight,
                  double[::1] grad_weight, double[::1] grad_bias, int threads):
    """Gradients of a forward with fixed statistics ``mean`` and ``invstd``:
    ``grad_input = g * w * invstd``, ``grad_weight = sum(g * xhat)``,
    ``grad_bias = sum(g)``."""
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           3 * <Py_ssize_t>sizeof(floating))
    cdef Py_ssize_t c, channels = geometry.channels
    cdef double *constants
    cdef Gradients out
    cdef int status
    if channels == 0:
        return
    # The parameter gradients are the reduction of a batch-statistics backward around
    # the fixed mean; only grad_input differs: g * scale, an affine map without centring.
    constants = <double *>malloc(3 * channels * sizeof(double))
    if constants == NULL:
        raise MemoryError()
    for c in range(channels):
        constants[c] = 0.0                                  # centre
        constants[channels + c] = weight[c] * invstd[c]     # scale
        constants[2 * channels + c] = 0.0                   # shift
    out.mean = &mean[0]
    out.invstd = &invstd[0]
    out.weight = &weight[0]
    out.grad_weight = &grad_weight[0]
    out.grad_bias = &grad_bias[0]
    if geometry.blocks == 0:
        gradients_of_empty_channels(channels, &out)
        free(constants)
        return
    with nogil:
        status = reduce_gradient_sums(&geometry, &x[0, 0, 0], batch_stride(x),
                                      channel_stride(x), &grad_output[0, 0, 0],
                                      batch_stride(grad_output), channel_stride(grad_output),
                                      &out, NULL, threads)
        normalise_channels(&geometry, &grad_output[0, 0, 0], batch_stride(grad_output),
                           channel_stride(grad_output),
                           &grad_input[0, 0, 0], batch_stride(grad_input),
                           channel_stride(grad_input),
                           constants, constants + channels, constants + 2 * channels, threads)
    free(constants)
    if status != 0:
        raise MemoryError()


# ==========================================================================================
# Geometry and threads
# ==========================================================================================

cdef struct Geometry:
    Py_ssize_t batch            # N
    Py_ssize_t channels         # C
    Py_ssize_t length           # L, elements per (n, c) row
    Py_ssize_t rows_per_block   # short rows: whole rows per block (else 1)
    Py_ssize_t blocks_per_row   # long rows: segments per row (else 1)
    Py_ssize_t blocks           # blocks per channel
    Py_ssize_t superblocks      # superblocks per channel
    Py_ssize_t batch_groups     # short rows: ranges of n whose gradient sums are taken apart
    bint stream                 # output passes use non-temporal stores


cdef struct Block:
    # rows of size elements, from element start of row first_row of a channel
    Py_ssize_t first_row
    Py_ssize_t rows
    Py_ssize_t start
    Py_ssize_t size


cdef Geometry make_geometry(Py_ssize_t batch, Py_ssize_t channels, Py_ssize_t length,
                            Py_ssize_t bytes_per_element) noexcept nogil:
    """The blocks of an (N, C, L) call whose arrays hold ``bytes_per_element`` bytes per
    element of ``x`` in all (0 when it writes no output)."""
    cdef Geometry geometry
    geometry.batch = batch
    geometry.channels = channels
    geometry.length = length
    geometry.rows_per_block = max(1, BLOCK // length) if length > 0 else 1
    geometry.blocks_per_row = 1
    if geometry.rows_per_block == 1:
        geometry.blocks_per_row = (length + BLOCK - 1) // BLOCK
    geometry.blocks = 0
    if length > 0:
        geometry.blocks = ((batch + geometry.rows_per_block - 1) // geometry.rows_per_block
                           * geometry.blocks_per_row)
    geometry.superblocks = min(geometry.blocks, <Py_ssize_t>MAX_SUPERBLOCKS)
    geometry.batch_groups = min(batch, <Py_ssize_t>MAX_SUPERBLOCKS)
    geometry.stream = (BN3D_STREAMING and bytes_per_element > 0
                       and batch * channels * length > stream_above // bytes_per_element)
    return geometry


cdef inline Block locate_block(const Geometry *geometry, Py_ssize_t index) noexcept nogil:
    """Block ``index`` of a channel: whole short rows, or a segment of a long row."""
    cdef Block block
    block.first_row = (index // geometry.blocks_per_row) * geometry.rows_per_block
    block.rows = min(geometry.rows_per_block, geometry.batch - block.first_row)
    block.start = (index % geometry.blocks_per_row) * BLOCK
    block.size = min(<Py_ssize_t>BLOCK, geometry.length - block.start)
    return block


cdef inline Py_ssize_t offset(const Block *block, Py_ssize_t batch_stride) noexcept nogil:
    """Offset of a block's first element from its channel's first element."""
    return block.first_row * batch_stride + block.start


cdef inline Py_ssize_t row_chunks(const Geometry *geometry) noexcept nogil:
    """Chunks of ``rows_per_block`` short rows, the rows counted in (n, c) order."""
    return ((geometry.batch * geometry.channels + geometry.rows_per_block - 1)
            // geometry.rows_per_block)


cdef inline Py_ssize_t chunk_end(const Geometry *geometry, Py_ssize_t first) noexcept nogil:
    """One past the last row of the chunk that starts at row ``first``."""
    return min(first + geometry.rows_per_block, geometry.batch * geometry.channels)


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


cdef inline Py_ssize_t batch_stride(const floating[:, :, :] a) noexcept nogil:
    return a.strides[0] // <Py_ssize_t>sizeof(floating)


cdef inline Py_ssize_t channel_stride(const floating[:, :, :] a) noexcept nogil:
    return a.strides[1] // <Py_ssize_t>sizeof(floating)


# ==========================================================================================
# Statistics: the moments of blocks, superblocks and channels
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


cdef inline Moments no_moments() noexcept nogil:
    cdef Moments zero
    zero.count = 0
    zero.mean = 0
    zero.m2 = 0
    return zero


cdef inline Moments merge_moments(Moments a, Moments b) noexcept nogil:
    """Chan et al.'s pairwise update of (count, mean, m2). A non-finite mean on either
    side gives the plain sum of the means (inf + finite = inf, inf - inf = NaN) and a
    NaN m2, as a plain sum of the data would."""
    cdef Moments merged
    cdef double delta
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    merged.count = a.count + b.count
    if not (isfinite(a.mean) and isfinite(b.mean)):
        merged.mean = a.mean + b.mean
        merged.m2 = NAN
        return merged
    delta = b.mean - a.mean
    merged.mean = a.mean + delta * (b.count / merged.count)
    merged.m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / merged.count)
    return merged


cdef inline Moments block_moments(const Block *block, const floating *x,
                                  Py_ssize_t x_batch_stride) noexcept nogil:
    """The moments of one block of a channel starting at ``x``."""
    cdef Moments result
    cdef const floating *start = x + offset(block, x_batch_stride)
    result.count = block.rows * block.size
    if floating is float:
        kernels.moments_float(start, x_batch_stride, block.rows, block.size,
                              &result.mean, &result.m2)
    else:
        kernels.moments_double(start, x_batch_stride, block.rows, block.size,
                               &result.mean, &result.m2)
    return result


cdef Moments superblock_moments(const Geometry *geometry, Py_ssize_t superblock,
                                const floating *x, Py_ssize_t xn) noexcept nogil:
    """The moments of one superblock of a channel: its blocks merged in order."""
    cdef Py_ssize_t first = superblock * geometry.blocks // geometry.superblocks
    cdef Py_ssize_t last = (superblock + 1) * geometry.blocks // geometry.superblocks
    cdef Py_ssize_t index
    cdef Block block
    cdef Moments total = no_moments()
    for index in range(first, last):
        block = locate_block(geometry, index)
        total = merge_moments(total, block_moments(&block, x, xn))
    return total


cdef Moments channel_moments(const Moments *superblocks, Py_ssize_t count) noexcept nogil:
    """A channel's moments: its superblocks merged in order."""
    cdef Moments total = superblocks[0]
    cdef Py_ssize_t i
    for i in range(1, count):
        total = merge_moments(total, superblocks[i])
    return total


cdef double store_statistics(Moments total, double eps, const Statistics *out,
                             Py_ssize_t c) noexcept nogil:
    """Store channel ``c``'s statistics; return its invstd."""
    cdef double invstd
    if total.count == 0:
        total.mean = NAN
        total.m2 = NAN
    invstd = 1.0 / sqrt(total.m2 / total.count + eps)
    out.mean[c] = total.mean
    out.invstd[c] = invstd
    out.var_unbiased[c] = total.m2 / (total.count - 1)
    return invstd


cdef void statistics_of_empty_channels(Py_ssize_t channels, double eps,
                                       const Statistics *out) noexcept nogil:
    """NaN statistics for channels without elements."""
    cdef Py_ssize_t c
    for c in range(channels):
        store_statistics(no_moments(), eps, out, c)


cdef int reduce_moments(const Geometry *geometry, const floating *x, Py_ssize_t xn,
                        Py_ssize_t xc, double eps, const Statistics *out,
                        int threads) noexcept nogil:
    """The statistics of every channel, all superblocks shared by the team: the same
    superblocks, merged in the same order, as ``normalise_train``. Returns -1 when out
    of memory."""
    cdef Py_ssize_t channels = geometry.channels, superblocks = geometry.superblocks
    cdef Py_ssize_t item, c
    cdef Moments *partials = <Moments *>malloc(channels * superblocks * sizeof(Moments))
    if partials == NULL:
        return -1
    if serial(threads):
        for item in range(channels * superblocks):
            partials[item] = superblock_moments(geometry, item % superblocks,
                                                x + (item // superblocks) * xc, xn)
    else:
        for item in prange(channels * superblocks, schedule="static", num_threads=threads):
            partials[item] = superblock_moments(geometry, item % superblocks,
                                                x + (item // superblocks) * xc, xn)
    for c in range(channels):
        store_statistics(channel_moments(partials + c * superblocks, superblocks), eps, out, c)
    free(partials)
    return 0


# ==========================================================================================
# Forward: the normalisation
# ==========================================================================================

cdef int normalise_train(const Geometry *geometry,
                         const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                         floating *y, Py_ssize_t yn, Py_ssize_t yc,
                         const double *weight, const double *bias, double eps,
                         const Statistics *out, int threads) noexcept nogil:
    """Per channel, the moments, then the normalisation with them.

    With many channels, each thread takes whole channels, so the normalisation re-reads
    a channel that the reduction has just brought into cache. With few channels, the
    team shares each channel: superblocks in the reduction, blocks in the
    normalisation. Both orders compute every superblock and merge them in the same way,
    so they give identical bits. Returns -1 when out of memory.
    """
    cdef Py_ssize_t channels = geometry.channels, superblocks = geometry.superblocks
    cdef Py_ssize_t c, s, block
    cdef double invstd
    cdef Moments *partials
    if serial(threads) or by_channel(geometry, threads):
        partials = <Moments *>malloc(
            (1 if serial(threads) else channels) * superblocks * sizeof(Moments))
        if partials == NULL:
            return -1
        if serial(threads):
            for c in range(channels):
                normalise_train_channel(geometry, c, x, xn, xc, y, yn, yc, weight, bias, eps,
                                        out, partials)
            end_streaming(geometry)
        else:
            with parallel(num_threads=threads):
                for c in prange(channels, schedule="static"):
                    normalise_train_channel(geometry, c, x, xn, xc, y, yn, yc, weight, bias,
                                            eps, out, partials + c * superblocks)
                end_streaming(geometry)
        free(partials)
        return 0
    partials = <Moments *>malloc(superblocks * sizeof(Moments))
    if partials == NULL:
        return -1
    for c in range(channels):
        for s in prange(superblocks, schedule="static", num_threads=threads):
            partials[s] = superblock_moments(geometry, s, x + c * xc, xn)
        invstd = store_statistics(channel_moments(partials, superblocks), eps, out, c)
        with parallel(num_threads=threads):
            for block in prange(geometry.blocks, schedule="static"):
                normalise_block(geometry, block, x + c * xc, xn, y + c * yc, yn,
                                out.mean[c], weight[c] * invstd, bias[c])
            end_streaming(geometry)
    free(partials)
    return 0


cdef void normalise_train_channel(const Geometry *geometry, Py_ssize_t c,
                                  const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                                  floating *y, Py_ssize_t yn, Py_ssize_t yc,
                                  const double *weight, const double *bias, double eps,
                                  const Statistics *out, Moments *partials) noexcept nogil:
    """Channel ``c``'s moments, then its normalisation, on the calling thread."""
    cdef Py_ssize_t s, block
    cdef double invstd
    for s in range(geometry.superblocks):
        partials[s] = superblock_moments(geometry, s, x + c * xc, xn)
    invstd = store_statistics(channel_moments(partials, geometry.superblocks), eps, out, c)
    for block in range(geometry.blocks):
        normalise_block(geometry, block, x + c * xc, xn, y + c * yc, yn, out.mean[c],
                        weight[c] * invstd, bias[c])


cdef inline void normalise_block(const Geometry *geometry, Py_ssize_t index,
                                 const floating *x, Py_ssize_t xn,
                                 floating *y, Py_ssize_t yn,
                                 double mean, double scale, double shift) noexcept nogil:
    """y = (x - mean) * scale + shift on block ``index`` of a channel."""
    cdef Block block = locate_block(geometry, index)
    if floating is float:
        kernels.affine_float(x + offset(&block, xn), xn, y + offset(&block, yn), yn,
                             block.rows, block.size, mean, scale, shift, geometry.stream)
    else:
        kernels.affine_double(x + offset(&block, xn), xn, y + offset(&block, yn), yn,
                              block.rows, block.size, mean, scale, shift, geometry.stream)


cdef void normalise_channels(const Geometry *geometry,
                             const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                             floating *out, Py_ssize_t on, Py_ssize_t oc,
                             const double *mean, const double *scale, const double *shift,
                             int threads) noexcept nogil:
    """out = (x - mean) * scale + shift per channel, all blocks shared by the team.

    Short rows are taken in (n, c) order, memory order for a contiguous array, so that
    each thread reads one stream rather than one short stream per row.
    """
    cdef bint short_rows = geometry.rows_per_block > 1
    cdef Py_ssize_t item, items
    items = row_chunks(geometry) if short_rows else geometry.channels * geometry.blocks
    if serial(threads):
        for item in range(items):
            normalise_item(geometry, item, short_rows, x, xn, xc, out, on, oc, mean, scale,
                           shift)
        end_streaming(geometry)
    else:
        with parallel(num_threads=threads):
            for item in prange(items, schedule="static"):
                normalise_item(geometry, item, short_rows, x, xn, xc, out, on, oc, mean,
                               scale, shift)
            end_streaming(geometry)


cdef inline void normalise_item(const Geometry *geometry, Py_ssize_t item, bint short_rows,
                                const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                                floating *out, Py_ssize_t on, Py_ssize_t oc,
                                const double *mean, const double *scale,
                                const double *shift) noexcept nogil:
    """Item ``item`` of ``normalise_channels``: a chunk of ``rows_per_block`` short rows
    counted in (n, c) order, or block ``item % blocks`` of channel ``item // blocks``."""
    cdef Py_ssize_t first, last, c
    if short_rows:
        first = item * geometry.rows_per_block
        last = chunk_end(geometry, first)
        if floating is float:
            kernels.affine_rows_float(x, xn, xc, out, on, oc, geometry.channels,
                                      geometry.length, first, last, mean, scale, shift,
                                      geometry.stream)
        else:
            kernels.affine_rows_double(x, xn, xc, out, on, oc, geometry.channels,
                                       geometry.length, first, last, mean, scale, shift,
                                       geometry.stream)
    else:
        c = item // geometry.blocks
        normalise_block(geometry, item % geometry.blocks, x + c * xc, xn, out + c * oc, on,
                        mean[c], scale[c], shift[c])


# ==========================================================================================
# Backward: the gradient sums, then grad_input
# ==========================================================================================

cdef struct GradientSums:
    double count
    double sum      # sum of g
    double dot      # sum of g * (x - mean)


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


cdef inline GradientSums no_gradient_sums() noexcept nogil:
    cdef GradientSums zero
    zero.count = 0
    zero.sum = 0
    zero.dot = 0
    return zero


cdef inline GradientSums add_gradient_sums(GradientSums a, GradientSums b) noexcept nogil:
    a.count = a.count + b.count
    a.sum = a.sum + b.sum
    a.dot = a.dot + b.dot
    return a


cdef inline GradientSums block_gradient_sums(const Block *block,
                                             const floating *g, Py_ssize_t g_batch_stride,
                                             const floating *x, Py_ssize_t x_batch_stride,
                                             double mean) noexcept nogil:
    """The gradient sums of one block of a channel: a segment of a long row (short rows
    are summed by ``gradient_sums_of_short_rows``)."""
    cdef GradientSums result
    cdef const floating *g_start = g + offset(block, g_batch_stride)
    cdef const floating *x_start = x + offset(block, x_batch_stride)
    result.count = block.size
    if floating is float:
        kernels.gradient_sums_float(g_start, x_start, block.size, mean, &result.sum,
                                    &result.dot)
    else:
        kernels.gradient_sums_double(g_start, x_start, block.size, mean, &result.sum,
                                     &result.dot)
    return result


cdef GradientSums superblock_gradient_sums(const Geometry *geometry, Py_ssize_t superblock,
                                           const floating *x, Py_ssize_t xn,
                                           const floating *g, Py_ssize_t gn,
                                           double mean) noexcept nogil:
    """The gradient sums of one superblock of a channel: its blocks added in order."""
    cdef Py_ssize_t first = superblock * geometry.blocks // geometry.superblocks
    cdef Py_ssize_t last = (superblock + 1) * geometry.blocks // geometry.superblocks
    cdef Py_ssize_t index
    cdef Block block
    cdef GradientSums total = no_gradient_sums()
    for index in range(first, last):
        block = locate_block(geometry, index)
        total = add_gradient_sums(total, block_gradient_sums(&block, g, gn, x, xn, mean))
    return total


cdef GradientSums channel_gradient_sums(const GradientSums *superblocks,
                                        Py_ssize_t count) noexcept nogil:
    cdef GradientSums total = superblocks[0]
    cdef Py_ssize_t i
    for i in range(1, count):
        total = add_gradient_sums(total, superblocks[i])
    return total


cdef GradInputConstants store_gradients(GradientSums total, const Gradients *out,
                                        Py_ssize_t c) noexcept nogil:
    """Store channel ``c``'s parameter gradients; return its grad_input constants."""
    cdef GradInputConstants k
    cdef double invstd = out.invstd[c]
    out.grad_bias[c] = total.sum
    # A sum over no elements is 0, even where invstd is NaN (an empty batch).
    out.grad_weight[c] = total.dot * invstd if total.count > 0 else 0.0
    k.mean = out.mean[c]
    k.scale = out.weight[c] * invstd
    k.grad_mean = total.sum / total.count
    k.grad_coefficient = invstd * invstd * (total.dot / total.count)
    return k


cdef void gradients_of_empty_channels(Py_ssize_t channels, const Gradients *out) noexcept nogil:
    """Zero parameter gradients for channels without elements."""
    cdef Py_ssize_t c
    for c in range(channels):
        store_gradients(no_gradient_sums(), out, c)


cdef inline void grad_input_constants(const GradInputConstants *k, floating *c) noexcept nogil:
    """The constants of the grad_input map (mean_hi, offset, coefficient, scale) in the
    data's precision, into ``c[0:4]``; for float data the low part of the mean is folded
    into ``offset`` (in double)."""
    cdef floating mean_hi = <floating>k.mean
    c[0] = mean_hi
    if floating is float and isfinite(mean_hi):
        c[1] = <float>(k.grad_mean - (k.mean - <double>mean_hi) * k.grad_coefficient)
    else:
        c[1] = k.grad_mean
    c[2] = <floating>k.grad_coefficient
    c[3] = <floating>k.scale


cdef int backward_train(const Geometry *geometry,
                        const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                        const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                        floating *out, Py_ssize_t on, Py_ssize_t oc,
                        const Gradients *gradients, int threads) noexcept nogil:
    """Per channel, the gradient sums, then grad_input with them: scheduled as
    ``normalise_train``, except short rows, read in memory order
    (``backward_short_rows``). Returns -1 when out of memory."""
    cdef Py_ssize_t channels = geometry.channels, superblocks = geometry.superblocks
    cdef Py_ssize_t c, s, block
    cdef GradInputConstants k
    cdef floating constants[4]
    cdef GradientSums *partials
    if geometry.rows_per_block > 1:
        return backward_short_rows(geometry, x, xn, xc, g, gn, gc, out, on, oc, gradients,
                                   threads)
    if serial(threads) or by_channel(geometry, threads):
        partials = <GradientSums *>malloc(
            (1 if serial(threads) else channels) * superblocks * sizeof(GradientSums))
        if partials == NULL:
            return -1
        if serial(threads):
            for c in range(channels):
                backward_train_channel(geometry, c, x, xn, xc, g, gn, gc, out, on, oc,
                                       gradients, partials)
            end_streaming(geometry)
        else:
            with parallel(num_threads=threads):
                for c in prange(channels, schedule="static"):
                    backward_train_channel(geometry, c, x, xn, xc, g, gn, gc, out, on, oc,
                                           gradients, partials + c * superblocks)
                end_streaming(geometry)
        free(partials)
        return 0
    partials = <GradientSums *>malloc(superblocks * sizeof(GradientSums))
    if partials == NULL:
        return -1
    for c in range(channels):
        for s in prange(superblocks, schedule="static", num_threads=threads):
            partials[s] = superblock_gradient_sums(geometry, s, x + c * xc, xn, g + c * gc, gn,
                                                   gradients.mean[c])
        k = store_gradients(channel_gradient_sums(partials, superblocks), gradients, c)
        grad_input_constants(&k, constants)
        with parallel(num_threads=threads):
            for block in prange(geometry.blocks, schedule="static"):
                grad_input_block(geometry, block, g + c * gc, gn, x + c * xc, xn,
                                 out + c * oc, on, constants)
            end_streaming(geometry)
    free(partials)
    return 0


cdef void backward_train_channel(const Geometry *geometry, Py_ssize_t c,
                                 const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                                 const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                                 floating *out, Py_ssize_t on, Py_ssize_t oc,
                                 const Gradients *gradients,
                                 GradientSums *partials) noexcept nogil:
    """Channel ``c``'s gradient sums, then its grad_input, on the calling thread."""
    cdef Py_ssize_t s, block
    cdef GradInputConstants k
    cdef floating constants[4]
    for s in range(geometry.superblocks):
        partials[s] = superblock_gradient_sums(geometry, s, x + c * xc, xn, g + c * gc, gn,
                                               gradients.mean[c])
    k = store_gradients(channel_gradient_sums(partials, geometry.superblocks), gradients, c)
    grad_input_constants(&k, constants)
    for block in range(geometry.blocks):
        grad_input_block(geometry, block, g + c * gc, gn, x + c * xc, xn, out + c * oc, on,
                         constants)


cdef inline void grad_input_block(const Geometry *geometry, Py_ssize_t index,
                                  const floating *g, Py_ssize_t gn,
                                  const floating *x, Py_ssize_t xn,
                                  floating *out, Py_ssize_t on,
                                  const floating *constants) noexcept nogil:
    """grad_input on block ``index`` of a channel."""
    cdef Block block = locate_block(geometry, index)
    if floating is float:
        kernels.grad_input_float(g + offset(&block, gn), gn, x + offset(&block, xn), xn,
                                 out + offset(&block, on), on, block.rows, block.size,
                                 constants, geometry.stream)
    else:
        kernels.grad_input_double(g + offset(&block, gn), gn, x + offset(&block, xn), xn,
                                  out + offset(&block, on), on, block.rows, block.size,
                                  constants, geometry.stream)


cdef int reduce_gradient_sums(const Geometry *geometry,
                              const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                              const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                              const Gradients *gradients, GradInputConstants *constants,
                              int threads) noexcept nogil:
    """The gradient sums of every channel, all superblocks shared by the team (short
    rows: in memory order), as ``backward_train`` takes them. Stores the parameter
    gradients and, unless ``constants`` is NULL, each channel's grad_input constants.
    Returns -1 when out of memory."""
    cdef Py_ssize_t channels = geometry.channels, superblocks = geometry.superblocks
    cdef Py_ssize_t item, c
    cdef GradInputConstants k
    cdef GradientSums *partials
    if geometry.rows_per_block > 1:
        return gradient_sums_of_short_rows(geometry, x, xn, xc, g, gn, gc, gradients,
                                           constants, threads)
    partials = <GradientSums *>malloc(channels * superblocks * sizeof(GradientSums))
    if partials == NULL:
        return -1
    if serial(threads):
        for item in range(channels * superblocks):
            c = item // superblocks
            partials[item] = superblock_gradient_sums(geometry, item % superblocks,
                                                      x + c * xc, xn, g + c * gc, gn,
                                                      gradients.mean[c])
    else:
        for item in prange(channels * superblocks, schedule="static", num_threads=threads):
            c = item // superblocks
            partials[item] = superblock_gradient_sums(geometry, item % superblocks,
                                                      x + c * xc, xn, g + c * gc, gn,
                                                      gradients.mean[c])
    for c in range(channels):
        k = store_gradients(channel_gradient_sums(partials + c * superblocks, superblocks),
                            gradients, c)
        if constants != NULL:
            constants[c] = k
    free(partials)
    return 0


cdef int gradient_sums_of_short_rows(const Geometry *geometry,
                                     const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                                     const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                                     const Gradients *gradients,
                                     GradInputConstants *constants,
                                     int threads) noexcept nogil:
    """The gradient sums of short rows, read in memory order.

    Each of the ``batch_groups`` ranges of consecutive n is summed for every channel at
    once, row by row in n order; the ranges are then added in order, so the result
    depends on the shape alone. Stores as ``reduce_gradient_sums``. Returns -1 when
    out of memory.
    """
    cdef Py_ssize_t channels = geometry.channels, groups = geometry.batch_groups
    cdef Py_ssize_t j, c
    cdef GradientSums total
    cdef GradInputConstants k
    cdef double *sums = <double *>calloc(2 * groups * channels, sizeof(double))
    if sums == NULL:
        return -1
    if serial(threads):
        for j in range(groups):
            batch_group_sums(geometry, j, x, xn, xc, g, gn, gc, gradients.mean,
                             sums + 2 * j * channels)
    else:
        for j in prange(groups, schedule="static", num_threads=threads):
            batch_group_sums(geometry, j, x, xn, xc, g, gn, gc, gradients.mean,
                             sums + 2 * j * channels)
    total.count = geometry.batch * geometry.length
    for c in range(channels):
        total.sum = sums[c]
        total.dot = sums[channels + c]
        for j in range(1, groups):
            total.sum = total.sum + sums[2 * j * channels + c]
            total.dot = total.dot + sums[(2 * j + 1) * channels + c]
        k = store_gradients(total, gradients, c)
        if constants != NULL:
            constants[c] = k
    free(sums)
    return 0


cdef inline void batch_group_sums(const Geometry *geometry, Py_ssize_t group,
                                  const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                                  const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                                  const double *mean, double *sums) noexcept nogil:
    """Add the gradient sums of the rows of batch group ``group`` into ``sums``
    (``sum(g)`` of each channel, then ``sum(g * (x - mean))``)."""
    cdef Py_ssize_t first = group * geometry.batch // geometry.batch_groups
    cdef Py_ssize_t last = (group + 1) * geometry.batch // geometry.batch_groups
    if floating is float:
        kernels.gradient_rows_float(g, gn, gc, x, xn, xc, geometry.channels, geometry.length,
                                    first, last, mean, sums, sums + geometry.channels)
    else:
        kernels.gradient_rows_double(g, gn, gc, x, xn, xc, geometry.channels, geometry.length,
                                     first, last, mean, sums, sums + geometry.channels)


cdef int backward_short_rows(const Geometry *geometry,
                             const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                             const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                             floating *out, Py_ssize_t on, Py_ssize_t oc,
                             const Gradients *gradients, int threads) noexcept nogil:
    """The batch-statistics backward of short rows, both passes in memory order.
    Returns -1 when out of memory."""
    cdef Py_ssize_t channels = geometry.channels, c, item
    cdef Py_ssize_t items = row_chunks(geometry)
    cdef GradInputConstants *constants = <GradInputConstants *>malloc(
        channels * sizeof(GradInputConstants))
    cdef floating *k = <floating *>malloc(4 * channels * sizeof(floating))
    cdef int status = -1
    if constants != NULL and k != NULL:
        status = gradient_sums_of_short_rows(geometry, x, xn, xc, g, gn, gc, gradients,
                                             constants, threads)
    if status == 0:
        for c in range(channels):
            grad_input_constants(&constants[c], k + 4 * c)
        if serial(threads):
            for item in range(items):
                grad_input_rows(geometry, item, x, xn, xc, g, gn, gc, out, on, oc, k)
            end_streaming(geometry)
        else:
            with parallel(num_threads=threads):
                for item in prange(items, schedule="static"):
                    grad_input_rows(geometry, item, x, xn, xc, g, gn, gc, out, on, oc, k)
                end_streaming(geometry)
    free(k)
    free(constants)
    return status


cdef inline void grad_input_rows(const Geometry *geometry, Py_ssize_t item,
                                 const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                                 const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                                 floating *out, Py_ssize_t on, Py_ssize_t oc,
                                 const floating *k) noexcept nogil:
    """grad_input of ``rows_per_block`` whole rows from row ``item * rows_per_block``,
    rows counted in (n, c) order."""
    cdef Py_ssize_t first = item * geometry.rows_per_block
    cdef Py_ssize_t last = chunk_end(geometry, first)
    if floating is float:
        kernels.grad_input_rows_float(g, gn, gc, x, xn, xc, out, on, oc, geometry.channels,
                                      geometry.length, first, last, k, geometry.stream)
    else:
        kernels.grad_input_rows_double(g, gn, gc, x, xn, xc, out, on, oc, geometry.channels,
                                       geometry.length, first, last, k, geometry.stream)
