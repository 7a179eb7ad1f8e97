"""Numba kernels: ``@njit(parallel=True)`` row loops with an exp that LLVM can vectorise.

Design
------
* Layout: the front layer hands over 2-D C-contiguous rows (n >= 1, k >= 1) and 1-D
  contiguous SGD vectors; nothing here checks inputs.
* Every raw kernel is made by one factory, :func:`_kernel`: the one ``prange`` loop (one
  contiguous run of rows or entries per thread) and the one place that applies ``n_threads``
  and restores the caller's setting. It runs a *work* function built by :func:`_exp_rows` for
  the exp-based kernels (softmax, log_softmax, logsumexp, both cross-entropies: the row loop
  around a per-kernel *finish*, and *prepare* where a row must be read before it is
  overwritten), by :func:`_rows` for the backward kernels, or written out for SGD.
* The fused linear kernels (softmax regression on rows taken by index) pass :func:`_kernel` a
  :class:`_Parts`: fewer runs than threads for small work, per-run partial dW/db summed in run
  order (deterministic), dense rows in blocks of ``ROWS_PER_BLOCK`` sharing each W load.
* Per row: maximum, exp-and-sum (into the output row, a scratch row or nowhere, whichever the
  kernel is fastest with), then the finish writes the outputs; each is a plain loop that LLVM
  vectorises. Rows narrower than ``NARROW`` go in blocks of ``BLOCK`` rows with one exp loop
  over the whole block.
* ``math.exp`` stays scalar in Numba's PyPI wheels (no SVML), so :func:`vexp` computes exp as
  range reduction + Taylor polynomial + exponent bits (< 2 ulp; exp(-inf) = 0, NaN stays NaN,
  results below the smallest normal number flush to 0).
* Sums accumulate in float64; other arithmetic stays in the array's dtype.
* Fast-math flags never include ``nnan``/``ninf`` (NaN/inf semantics are part of the contract),
  and ``reassoc`` is confined to the reductions: it would turn ``(x - m) - log(s)`` into
  ``x - (m + log(s))`` and undo the range reduction inside ``vexp``.
* Each kernel compiles on its first call with a given dtype, and only then
  (``fastsoftmax.warmup()`` compiles ahead), into Numba's on-disk cache: a later process loads
  it in a fraction of a second. The cache sits in the package's ``__pycache__`` when that is
  writable, else in Numba's user cache directory (``NUMBA_CACHE_DIR`` chooses another);
  ``FASTSOFTMAX_NUMBA_CACHE=0`` turns it off. See :class:`_ByDtype` for why each kernel and
  dtype is a Numba function of its own.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

EXACT = {"nsz", "arcp", "contract", "afn"}
REDUCE = EXACT | {"reassoc"}

# Compiled kernels are kept in Numba's on-disk cache (see _ByDtype) unless
# FASTSOFTMAX_NUMBA_CACHE=0, and never under NUMBA_BOUNDSCHECK: Numba's cache key does not
# record it, so a checked run would load kernels compiled without the checks.
CACHE = os.environ.get("FASTSOFTMAX_NUMBA_CACHE", "1") != "0" and not numba.config.BOUNDSCHECK
cache_failures: list[str] = []


def max_threads() -> int:
    return numba.config.NUMBA_NUM_THREADS


def describe() -> dict:
    """Facts for ``fastsoftmax info`` and the bench header (the threading layer in use is known
    only after a parallel kernel has run)."""
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    return {
        "numba": numba.__version__,
        "threading_layer": layer,
        "threading_layer_setting": numba.config.THREADING_LAYER,
        "svml": bool(numba.config.USING_SVML),
        "cache": _cache_state(),
    }


def _cache_state() -> str:
    """Where compiled kernels are cached, or why they are not."""
    if not CACHE:
        return "off (FASTSOFTMAX_NUMBA_CACHE=0 or NUMBA_BOUNDSCHECK)"
    if cache_failures:
        return f"off: {cache_failures[0]}"
    try:  # the directory Numba picks for a function of this file (a private Numba class)
        from numba.core.caching import FunctionCache

        return FunctionCache(_on_threads)._cache_path
    except Exception:  # a fact for a report, not worth failing it
        return "on"


# -- scalar helpers -------------------------------------------------------------------------


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret int64/int32 bits as float64/float32."""
    if bits == types.int64:
        result, llvm_type = types.float64, ir.DoubleType()
    elif bits == types.int32:
        result, llvm_type = types.float32, ir.FloatType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_type)

    return result(bits), codegen


@intrinsic
def _float_to_bits(typingctx, value):
    """Reinterpret float64/float32 as int64/int32 bits."""
    if value == types.float64:
        result, llvm_type = types.int64, ir.IntType(64)
    elif value == types.float32:
        result, llvm_type = types.int32, ir.IntType(32)
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_type)

    return result(value), codegen


def vexp(x):
    """exp(x) written as arithmetic so that a loop calling it vectorises."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


def like(value, sample):
    """``value`` converted to the float type of ``sample``."""
    raise NotImplementedError


_F32 = np.float32

# exp(x) = 2**k * exp(r), k = round(x / ln 2), r = x - k ln 2 in two parts (Cody-Waite).
# Adding MAGIC (1.5 * 2**mantissa_bits) to k leaves k in the low bits of the float; shifting
# (bits + bias) left by the mantissa width builds 2**k without a float->int conversion.
_F64 = {
    "log2e": 1.4426950408889634,
    "ln2_hi": 6.93147180369123816490e-01,
    "ln2_lo": 1.90821492927058770002e-10,
    "magic": 6755399441055744.0,
    "k_min": -1022.0,
    "k_max": 1023.0,
    "x_min": -708.3964185322641,  # log of the smallest normal float64
}
_F64_TAYLOR = tuple(1.0 / math.factorial(i) for i in range(13, -1, -1))  # degree 13
_F32_TAYLOR = tuple(_F32(1.0 / math.factorial(i)) for i in range(7, -1, -1))  # degree 7


@overload(vexp, jit_options={"fastmath": EXACT})
def _vexp_impl(x):
    if x == types.float64:
        c13, c12, c11, c10, c9, c8, c7, c6, c5, c4, c3, c2, c1, c0 = _F64_TAYLOR
        log2e, ln2_hi, ln2_lo = _F64["log2e"], _F64["ln2_hi"], _F64["ln2_lo"]
        magic, k_min, k_max, x_min = _F64["magic"], _F64["k_min"], _F64["k_max"], _F64["x_min"]

        def exp64(x):
            k = np.floor(x * log2e + 0.5)
            k = k if k > k_min else k_min  # NaN lands on k_min; r keeps the NaN
            k = k if k < k_max else k_max
            r = (x - k * ln2_hi) - k * ln2_lo
            p = c13
            for c in (c12, c11, c10, c9, c8, c7, c6, c5, c4, c3, c2, c1, c0):
                p = p * r + c
            scale = _bits_to_float((_float_to_bits(k + magic) + np.int64(1023)) << np.int64(52))
            return 0.0 if x < x_min else p * scale

        return exp64
    if x == types.float32:
        c7, c6, c5, c4, c3, c2, c1, c0 = _F32_TAYLOR
        log2e, ln2_hi, ln2_lo = _F32(1.4426950408889634), _F32(0.693359375), _F32(-2.12194440e-4)
        magic, k_min, k_max = _F32(12582912.0), _F32(-126.0), _F32(127.0)
        x_min, half, zero = _F32(-87.33654), _F32(0.5), _F32(0.0)

        def exp32(x):
            k = np.floor(x * log2e + half)
            k = k if k > k_min else k_min
            k = k if k < k_max else k_max
            r = (x - k * ln2_hi) - k * ln2_lo
            p = c7
            for c in (c6, c5, c4, c3, c2, c1, c0):
                p = p * r + c
            # Numba widens int32 arithmetic to int64: truncate back before reinterpreting.
            scale = _bits_to_float(np.int32((_float_to_bits(k + magic) + 127) << 23))
            return zero if x < x_min else p * scale

        return exp32
    return None


@njit(fastmath=EXACT)
def exp(x, out):
    """out = vexp(x) elementwise: the kernels' exp on its own, for the accuracy tests."""
    for i in range(x.shape[0]):
        out[i] = vexp(x[i])


@overload(like)
def _like_impl(value, sample):
    if sample == types.float32:
        return lambda value, sample: np.float32(value)
    return lambda value, sample: np.float64(value)


@njit(fastmath=EXACT)
def _row_max(row):
    """Largest non-NaN entry, or row[0] if that is NaN; NaN rows are caught later by sums.

    Eight running maxima: LLVM vectorises no floating-point max reduction without "nnan", and
    one running maximum is a chain of dependent compares (it took 4.3 ms of an 8.9 ms float32
    (4096, 1000) softmax on one thread; eight chains take 0.8 ms). Each chain keeps the
    one-chain rule (a NaN never wins a compare, a NaN row[0] is never replaced), so the result
    is the same.
    """
    k = row.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = row[0]
    j = 0
    while j + 8 <= k:
        m0 = row[j] if row[j] > m0 else m0
        m1 = row[j + 1] if row[j + 1] > m1 else m1
        m2 = row[j + 2] if row[j + 2] > m2 else m2
        m3 = row[j + 3] if row[j + 3] > m3 else m3
        m4 = row[j + 4] if row[j + 4] > m4 else m4
        m5 = row[j + 5] if row[j + 5] > m5 else m5
        m6 = row[j + 6] if row[j + 6] > m6 else m6
        m7 = row[j + 7] if row[j + 7] > m7 else m7
        j += 8
    for t in range(j, k):
        m0 = row[t] if row[t] > m0 else m0
    for m in (m1, m2, m3, m4, m5, m6, m7):
        m0 = m if m > m0 else m0
    return m0


def _exp_sum(row, m, dst):
    """sum_j exp(row[j] - m) in float64, storing each term in ``dst``."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_exp_sum, jit_options={"fastmath": REDUCE})
def _exp_sum_impl(row, m, dst):
    if row.dtype == types.float32:
        # Two loops: the exp loop alone vectorises fully, while exp fused with a float64 sum
        # of float32 terms ran at half the speed (float32 (4096, 1000) softmax, one thread).
        def exp_then_sum(row, m, dst):
            for j in range(row.shape[0]):
                dst[j] = vexp(row[j] - m)
            s = 0.0
            for j in range(row.shape[0]):
                s += dst[j]
            return s

        return exp_then_sum

    def exp_and_sum(row, m, dst):  # float64: one loop is faster (no conversion in the sum)
        s = 0.0
        for j in range(row.shape[0]):
            e = vexp(row[j] - m)
            dst[j] = e
            s += e
        return s

    return exp_and_sum


@njit(fastmath=REDUCE)
def _shifted_sum(row, m):
    """sum_j (row[j] - m) in float64."""
    s = 0.0
    for j in range(row.shape[0]):
        s += row[j] - m
    return s


@njit(fastmath=REDUCE)
def _row_sum(row):
    s = 0.0
    for j in range(row.shape[0]):
        s += row[j]
    return s


@njit(fastmath=REDUCE)
def _row_dot(a, b):
    """sum_j a[j] * b[j] in float64 (products too: exact for float32 entries)."""
    s = 0.0
    for j in range(a.shape[0]):
        s += np.float64(a[j]) * b[j]
    return s


@njit
def _lse_of_nonfinite_max(row, m):
    for j in range(row.shape[0]):
        if np.isnan(row[j]):
            return np.nan
    return m


# -- drivers ----------------------------------------------------------------------------------
# A raw kernel is made by _kernel from a *work* function ``work(x, args, run, n_runs)``: ``x``
# is the kernel's first argument, whose rows (or entries) are split over threads, ``args`` a
# tuple of the others but n_threads, and ``run`` which of the ``n_runs`` shares to do.


@njit
def _run_range(n, n_runs, run):
    """Items [start, stop) of ``run`` when ``n`` items are split evenly into ``n_runs`` runs."""
    return run * n // n_runs, (run + 1) * n // n_runs


_KERNEL_SOURCE = """\
def {name}({parameters}, n_threads):
    if n_threads == 1:  # no pool dispatch
        work({first}, ({rest},), 0, 1)
    else:
        for run in prange(n_threads):
            work({first}, ({rest},), run, n_threads)
"""


_PARTS_KERNEL_SOURCE = """\
def {name}({parameters}, n_threads):
    n_runs = runs({first}, ({rest},), n_threads)
    scratch = make_scratch({first}, ({rest},), n_runs)
    if n_runs == 1:  # no pool dispatch
        work({first}, ({rest},), 0, 1, scratch)
    else:
        for run in prange(n_runs):
            work({first}, ({rest},), run, n_runs, scratch)
    return gather({first}, ({rest},), scratch)
"""

# The raw kernel itself: Python that hands its arguments to the compiled function for the dtype
# of its first argument, on n_threads threads.
_BY_DTYPE_SOURCE = """\
def {name}({parameters}, n_threads):
    return on_threads(n_threads, compiled[{first}.dtype], {parameters})
"""


def _on_threads(n_threads, compiled, *args):
    """``compiled(*args, n_threads)`` with Numba's pool set to ``n_threads`` threads (the
    caller's setting is restored). Set here rather than in the compiled code: Numba cannot cache
    a function that reads or sets the thread count. Threads then take one run each of a
    ``prange`` over at most ``n_threads`` runs, and one run takes none from the pool."""
    caller_threads = n_threads if n_threads == 1 else numba.get_num_threads()
    if caller_threads == n_threads:
        return compiled(*args, n_threads)
    numba.set_num_threads(n_threads)
    try:
        return compiled(*args, n_threads)
    finally:
        numba.set_num_threads(caller_threads)


class _Parts:
    """Hooks of a kernel whose runs accumulate into per-run scratch, combined afterwards:
    ``runs(x, args, n_threads)``, how many runs the work is worth; ``scratch(x, args, n_runs)``,
    the per-run buffers, passed to ``work(x, args, run, n_runs, scratch)``; ``gather(x, args,
    scratch)``, which combines them in a fixed order and returns the kernel's result."""

    def __init__(self, runs, scratch, gather):
        self.runs, self.scratch, self.gather = runs, scratch, gather


def _define(template: str, name: str, namespace: dict, **fields):
    """The function ``name`` that ``template`` defines, compiled as if it stood where the
    template stands in this file: tracebacks and Numba's messages then quote the template, and
    Numba's on-disk cache, which needs a real source file, can locate it."""
    source = template.format(name=name, **fields)
    padding = "\n" * _SOURCE[: _SOURCE.index(template)].count("\n")
    exec(compile(padding + source, __file__, "exec"), namespace)
    return namespace[name]


with open(__file__, encoding="utf-8") as _file:
    _SOURCE = _file.read()


class _ByDtype(dict):
    """A kernel's compiled functions by dtype, each compiled (or read from the on-disk cache)
    on first use: a call compiles only its own kernel and dtype.

    One Numba function per kernel and dtype also keeps one signature per cache index. Numba
    names a new cache entry's data file after the entries already in the index it has read, so
    two processes compiling *different* signatures of one function at once can each write an
    entry under the same file name, and a later process load the other signature's code for its
    own. With one signature per function, processes that race write the same entry."""

    def __init__(self, name, template, fields, namespace):
        super().__init__()
        self.name, self.template, self.fields, self.namespace = name, template, fields, namespace

    def __missing__(self, dtype):
        name = f"{self.name}_{dtype.name}"
        function = _define(self.template, name, dict(self.namespace), **self.fields)
        function.__module__ = __name__
        self[dtype] = compiled = _jit(function)
        return compiled


def _jit(function):
    options = {"parallel": True, "fastmath": EXACT}
    if CACHE:
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError as exc:  # no writable cache directory anywhere
            cache_failures.append(str(exc))
    return njit(**options)(function)


def _kernel(name, parameters, work, doc=None, parts=None):
    """The raw kernel ``name(parameters..., n_threads)``: runs ``work`` once per thread.

    Here and only here (with :func:`_on_threads`): ``n_threads`` is applied. One run per
    thread, each a contiguous share of the work, so a run can allocate its scratch buffers
    once. The compiled function is generated from source so that it packs no tuple in
    a wrapper of its own: every further jitted layer re-optimises all the code below it at
    compile time. The kernel has the contract's parameter names (tests/test_contract.py reads
    them); its ``compiled`` attribute holds the compiled function of each dtype used so far.

    ``work`` must stay a call, not ``inline="always"``: with ``args`` unpacked inside the prange
    body itself, Numba 0.68 dropped the writes to the arrays taken from it. The row finishes are
    inlined into ``work`` instead (a call per row cost 2x on (1M, 10)).

    With ``parts`` (a :class:`_Parts`), the kernel has fewer runs than threads when the work is
    small, and returns what ``parts.gather`` does.
    """
    first, *rest = parameters.split(", ")
    fields = {"parameters": parameters, "first": first, "rest": ", ".join(rest)}
    namespace = {"__name__": __name__, "prange": prange, "work": work}
    if parts is not None:
        namespace.update(runs=parts.runs, make_scratch=parts.scratch, gather=parts.gather)
    template = _KERNEL_SOURCE if parts is None else _PARTS_KERNEL_SOURCE
    compiled = _ByDtype(name, template, fields, namespace)
    kernel = _define(
        _BY_DTYPE_SOURCE, name, {"compiled": compiled, "on_threads": _on_threads}, **fields
    )
    kernel.__module__, kernel.__doc__, kernel.compiled = __name__, doc, compiled
    return kernel


# Narrow rows (k < NARROW) go BLOCK rows at a time: each row's maximum is subtracted row by row,
# then ONE flat vexp loop covers the whole block. Row by row, a 10-wide row would leave most of
# a vector idle and pay a loop tail. Each thread takes one contiguous run of blocks with its own
# scratch buffers (allocated once per call, not per block). Same constants as the Cython backend.
NARROW = 32
BLOCK = 64


@njit
def _block_run(n_rows, n_runs, run):
    """Rows [start, stop) of ``run`` when ``n_rows`` rows, in blocks of BLOCK, are split evenly."""
    n_blocks = (n_rows + BLOCK - 1) // BLOCK
    start = run * n_blocks // n_runs * BLOCK
    return start, min((run + 1) * n_blocks // n_runs * BLOCK, n_rows)


@njit(fastmath=EXACT)
def _block_maxima(x, maxima):
    """maxima[r] = max of row r, as _row_max, with one running maximum: for rows this short
    the eight chains of _row_max cost more than they save ((1M, 10) softmax: 1.5x slower)."""
    for r in range(x.shape[0]):
        row = x[r]
        m = row[0]
        for j in range(1, row.shape[0]):
            m = row[j] if row[j] > m else m
        maxima[r] = m


@njit(fastmath=EXACT)
def _block_shift(x, maxima, shifted):
    """shifted[r] = x[r] - maxima[r] for each row r of the block ``x``."""
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            shifted[r, j] = x[r, j] - maxima[r]


@njit(fastmath=EXACT)
def _flat_vexp(block):
    """block = exp(block) in place: one loop over the C-contiguous block, vectorised."""
    flat = block.reshape(block.size)
    for i in range(flat.shape[0]):
        flat[i] = vexp(flat[i])


@njit(fastmath=REDUCE)
def _exp_sum_only(row, m, unused):
    """sum_j exp(row[j] - m) in float64, nothing stored (``unused``: as _exp_sum's ``dst``)."""
    s = 0.0
    for j in range(row.shape[0]):
        s += vexp(row[j] - m)
    return s


# Homes of the exponentials (see _exp_rows): rows [first, stop), or row i, of the scratch block
# ``terms`` or of the kernel's row output (the last of its ``args``).


@njit(inline="always")
def _scratch_rows(args, first, stop, terms):
    return terms[: stop - first]


@njit(inline="always")
def _scratch_row(args, i, terms):
    return terms[0]


@njit(inline="always")
def _output_rows(args, first, stop, terms):
    return args[-1][first:stop]


@njit(inline="always")
def _output_row(args, i, terms):
    return args[-1][i]


@njit(inline="always")
def _nothing_to_read_first(x, args, i, m):
    return True, (0.0, 0.0, 0.0)


def _exp_rows(finish, prepare=_nothing_to_read_first, exps="scratch", narrow_blocks=True):
    """Driver of a kernel built on each row's exponentials.

    For each row i of ``x``: m = max(x[i]); ``prepare(x, args, i, m)`` returns (needed, pre):
    ``pre``, three float64 values it reads from x[i] before the exponentials may overwrite it
    (the output may be ``x`` itself), and ``needed``, False if the row needs no exponentials;
    then exps = exp(x[i] - m), s = sum(exps) in float64, and ``finish(x, args, i, m, exps, s,
    pre)`` writes the results (with s = 0 and exps unset if not ``needed``; narrow rows get them
    all the same). Values go by tuple rather than through a scratch array, and hooks take ``i``
    rather than the row: every array view made per row costs a reference count update, which
    took up to 1.5x on (1M, 10) cross-entropy.

    ``exps``, where the exponentials go: ``"output"``, the kernel's row output (the last of
    ``args``), which the finish then scales in place; ``"scratch"``, a per-thread scratch row;
    ``"none"``, nowhere for wide rows (only s), a scratch block for narrow ones. Rows narrower
    than NARROW go BLOCK rows at a time (see above) unless ``narrow_blocks`` is False.
    """
    home_rows, home_row = {"output": (_output_rows, _output_row)}.get(
        exps, (_scratch_rows, _scratch_row)
    )
    exp_sum = _exp_sum_only if exps == "none" else _exp_sum

    @njit(fastmath=EXACT)
    def wide(x, args, run, n_runs):
        terms = np.empty((1, x.shape[1]), x.dtype)
        start, stop = _run_range(x.shape[0], n_runs, run)
        for i in range(start, stop):
            row = x[i]
            m = _row_max(row)
            row_exps = home_row(args, i, terms)
            needed, pre = prepare(x, args, i, m)
            s = exp_sum(row, m, row_exps) if needed else 0.0
            finish(x, args, i, m, row_exps, s, pre)

    if not narrow_blocks:
        return wide

    @njit(fastmath=EXACT)
    def blocks(x, args, run, n_runs):
        n, k = x.shape
        if k >= NARROW:
            wide(x, args, run, n_runs)
            return
        maxima, terms = np.empty(BLOCK, x.dtype), np.empty((BLOCK, k), x.dtype)
        pre = np.empty((BLOCK, 3))
        start, stop = _block_run(n, n_runs, run)
        for first in range(start, stop, BLOCK):
            last = min(first + BLOCK, stop)
            block, block_exps = x[first:last], home_rows(args, first, last, terms)
            _block_maxima(block, maxima)
            for r in range(last - first):
                pre[r, 0], pre[r, 1], pre[r, 2] = prepare(x, args, first + r, maxima[r])[1]
            _block_shift(block, maxima, block_exps)
            _flat_vexp(block_exps)
            for r in range(last - first):
                row_exps, values = block_exps[r], (pre[r, 0], pre[r, 1], pre[r, 2])
                finish(x, args, first + r, maxima[r], row_exps, _row_sum(row_exps), values)

    return blocks


def _rows(finish):
    """Driver that calls ``finish(x, args, i)`` for each row i of ``x``."""

    @njit(fastmath=EXACT)
    def rows(x, args, run, n_runs):
        start, stop = _run_range(x.shape[0], n_runs, run)
        for i in range(start, stop):
            finish(x, args, i)

    return rows


# -- row finishes -----------------------------------------------------------------------------
# Where each kernel keeps its exponentials (``exps`` of _exp_rows) is chosen for speed: softmax
# and the cross-entropies in the output row, scaled in place there (writing the output from a
# scratch row instead ran 1.2x slower on float32 (512, 32000): the output's cache misses then
# land in a loop with no exp work to hide them); logsumexp in a scratch row (float32 exp then sum
# beats the fused loop, see _exp_sum); log_softmax nowhere, it recomputes x - m.


@njit(fastmath=EXACT, inline="always")
def _logsumexp_finish(x, args, i, m, exps, s, pre):
    (out,) = args
    if np.isfinite(m):
        out[i] = m + np.log(s)
    else:
        out[i] = _lse_of_nonfinite_max(x[i], m)


@njit(fastmath=EXACT, inline="always")
def _softmax_finish(x, args, i, m, exps, s, pre):
    inv = like(1.0 / s, m)
    for j in range(exps.shape[0]):  # exps is out[i]
        exps[j] *= inv


@njit(fastmath=EXACT, inline="always")
def _log_softmax_finish(x, args, i, m, exps, s, pre):
    (out,) = args
    row, dst = x[i], out[i]
    log_sum = like(np.log(s), m)
    for j in range(dst.shape[0]):
        dst[j] = (row[j] - m) - log_sum


@njit(fastmath=EXACT, inline="always")
def _labels_prepare(logits, args, i, m):
    """(row[label] - m, sum_j (row[j] - m), unused) in float64, what the loss needs from the row;
    an ignored row (label < 0) needs nothing, not even its exponentials."""
    labels, label_smoothing = args[0], args[3]
    label = labels[i]
    if label < 0:
        return False, (0.0, 0.0, 0.0)
    smooth_shift = _shifted_sum(logits[i], m) if label_smoothing != 0 else 0.0
    return True, (np.float64(logits[i, label]) - m, smooth_shift, 0.0)


@njit(fastmath=EXACT, inline="always")
def _labels_finish(logits, args, i, m, exps, s, pre):
    """Turn exp(row - m) in ``exps`` (grad_out[i], summing to ``s``) into c * (softmax(row) -
    target) and store the row's loss against labels[i] smoothed by label_smoothing, weighted;
    an ignored row (label < 0) gets zeros."""
    labels, weights, scale, label_smoothing, loss_out, _ = args
    label, grad = labels[i], exps  # exps is grad_out[i]
    if label < 0:
        grad[:] = 0
        loss_out[i] = 0.0
        return
    c = scale * weights[i]
    eps = label_smoothing / grad.shape[0]
    inv, off = like(c / s, m), like(c * eps, m)
    for j in range(grad.shape[0]):
        grad[j] = grad[j] * inv - off
    grad[label] -= like(c * (1.0 - label_smoothing), m)
    # label_smoothing == 1 drops the label: its -inf shift must not give 0 * -inf = NaN.
    label_term = (1.0 - label_smoothing) * pre[0] if label_smoothing != 1 else 0.0
    loss_out[i] = weights[i] * (np.log(s) - label_term - eps * pre[1])


@njit(fastmath=REDUCE)
def _target_sums(row, target, m):
    """(sum_j t_j, sum_j t_j (row[j] - m) over t_j != 0) in float64."""
    mass = 0.0
    dot = 0.0
    for j in range(row.shape[0]):
        t = np.float64(target[j])
        mass += t
        dot += t * (row[j] - m) if t != 0 else 0.0
    return mass, dot


@njit(fastmath=EXACT, inline="always")
def _soft_prepare(logits, args, i, m):
    """(sum_j t_j, sum_j t_j (row[j] - m), sum_j (row[j] - m)) in float64, t = target[i]."""
    target, label_smoothing = args[0], args[3]
    mass, dot = _target_sums(logits[i], target[i], m)
    smooth_shift = _shifted_sum(logits[i], m) if label_smoothing != 0 else 0.0
    return True, (mass, dot, smooth_shift)


@njit(fastmath=EXACT, inline="always")
def _soft_finish(logits, args, i, m, exps, s, pre):
    """As _labels_finish, against the probability row target[i] (no ignored rows)."""
    target, weights, scale, label_smoothing, loss_out, _ = args
    grad = exps  # grad_out[i]; target[i, j] below, not a view target[i] (see _exp_rows)
    eps = label_smoothing / grad.shape[0]
    keep = 1.0 - label_smoothing
    mass = keep * pre[0] + label_smoothing
    c = scale * weights[i]
    inv, off = like(c * mass / s, m), like(c * eps, m)
    c_keep = like(c * keep, m)
    for j in range(grad.shape[0]):
        grad[j] = grad[j] * inv - c_keep * target[i, j] - off
    target_term = keep * pre[1] if keep != 0 else 0.0  # as in _labels_finish
    loss_out[i] = weights[i] * (mass * np.log(s) - target_term - eps * pre[2])


@njit(fastmath=EXACT, inline="always")
def _softmax_backward_row(grad_output, args, i):
    output, grad_input = args
    dy, y, dx = grad_output[i], output[i], grad_input[i]
    s = like(_row_dot(dy, y), y[0])
    for j in range(dx.shape[0]):  # dx may be dy or y: entry j of both is read before it is set
        dx[j] = y[j] * (dy[j] - s)


@njit(fastmath=EXACT, inline="always")
def _log_softmax_backward_row(grad_output, args, i):
    output, grad_input = args
    dy, y, dx = grad_output[i], output[i], grad_input[i]
    s = like(_row_sum(dy), y[0])
    for j in range(dx.shape[0]):  # as in _softmax_backward_row
        dx[j] = dy[j] - vexp(y[j]) * s


@njit(fastmath=EXACT)
def _sgd_run(param, args, run, n_runs):
    grad, lr, weight_decay, sign = args
    lr_, wd = like(lr, param[0]), like(weight_decay, param[0])
    start, stop = _run_range(param.shape[0], n_runs, run)
    p, g = param[start:stop], grad[start:stop]
    # The sign is a select, not a multiply: with contraction allowed, sign * g + wd * p could
    # become another FMA than g + wd * p, and the default must stay bitwise as it was.
    neg = sign < 0
    for i in range(p.shape[0]):
        p[i] -= lr_ * ((-g[i] if neg else g[i]) + wd * p[i])


@njit(fastmath=EXACT)
def _sgd_momentum_run(param, args, run, n_runs):
    grad, velocity, lr, momentum, weight_decay, nesterov, sign, dampening, first_step = args
    lr_, mu, wd = like(lr, param[0]), like(momentum, param[0]), like(weight_decay, param[0])
    keep = like(1.0 - dampening, param[0])
    start, stop = _run_range(param.shape[0], n_runs, run)
    p, g, vel = param[start:stop], grad[start:stop], velocity[start:stop]
    neg, damped = sign < 0, dampening != 0
    for i in range(p.shape[0]):  # selects, not multiplies, when undamped: as in _sgd_run
        gi = (-g[i] if neg else g[i]) + wd * p[i]
        v = gi if first_step else mu * vel[i] + (keep * gi if damped else gi)
        vel[i] = v
        p[i] -= lr_ * (gi + mu * v if nesterov else v)


# -- raw kernels (contract: fastsoftmax.backends) ----------------------------------------------

logsumexp = _kernel("logsumexp", "x, out", _exp_rows(_logsumexp_finish, exps="scratch"))
softmax = _kernel("softmax", "x, out", _exp_rows(_softmax_finish, exps="output"))
log_softmax = _kernel("log_softmax", "x, out", _exp_rows(_log_softmax_finish, exps="none"))
cross_entropy_labels = _kernel(
    "cross_entropy_labels",
    "logits, labels, weights, scale, label_smoothing, loss_out, grad_out",
    _exp_rows(_labels_finish, _labels_prepare, exps="output"),
)
cross_entropy_soft = _kernel(
    "cross_entropy_soft",
    "logits, target, weights, scale, label_smoothing, loss_out, grad_out",
    # Row by row at every width: no block path has been written and measured for it.
    _exp_rows(_soft_finish, _soft_prepare, exps="output", narrow_blocks=False),
)
softmax_backward = _kernel(
    "softmax_backward",
    "grad_output, output, grad_input",
    _rows(_softmax_backward_row),
    doc="""grad_input = output * (grad_output - sum(grad_output * output)) row by row (the sum in
    float64); grad_input may be grad_output or output.""",
)
log_softmax_backward = _kernel(
    "log_softmax_backward",
    "grad_output, output, grad_input",
    _rows(_log_softmax_backward_row),
    doc="""grad_input = grad_output - exp(output) * sum(grad_output) row by row (the sum in
    float64); grad_input may be grad_output or output.""",
)
sgd = _kernel("sgd", "param, grad, lr, weight_decay, sign", _sgd_run)
sgd_momentum = _kernel(
    "sgd_momentum",
    "param, grad, velocity, lr, momentum, weight_decay, nesterov, sign, dampening, first_step",
    _sgd_momentum_run,
)


# -- fused linear cross-entropy -----------------------------------------------------------------
# Softmax regression on a minibatch of X taken by row index: logits o = W x + b, loss and the
# gradient (dW, db) in one pass over the rows, so X is read once and no (m, k) logits or (m, d)
# gathered copy exists. Each run accumulates into its own partial dW/db (run 0 into dW/db
# themselves), summed afterwards in run order: deterministic for a given n_threads.

# Dense rows go ROWS_PER_BLOCK at a time: each W[c] vector loaded serves that many dot products,
# and each dW[c] vector is loaded and stored once per block.
ROWS_PER_BLOCK = 4
# Multiply-adds (rows * k * d, or rows * k * stored entries for CSR) below which a second thread
# costs more than it saves (see _linear_runs).
MIN_WORK_PER_THREAD = 1 << 20


@njit
def _linear_runs(work, n_threads):
    """How many runs (threads) ``work`` multiply-adds are worth, at most ``n_threads``."""
    return max(1, min(n_threads, work // MIN_WORK_PER_THREAD))


@njit
def _dense_runs(X, args, n_threads):
    rows, W = args[0], args[1]
    return _linear_runs(rows.shape[0] * W.shape[0] * W.shape[1], n_threads)


@njit
def _csr_runs(X_data, args, n_threads):
    X_indptr, rows, W = args[1], args[2], args[3]
    mean_stored = max(1, X_indptr[-1] // max(1, X_indptr.shape[0] - 1))
    return _linear_runs(rows.shape[0] * W.shape[0] * mean_stored, n_threads)


@njit
def _linear_scratch(x, args, n_runs):
    """Per-run partial (dW, db, loss): runs 1.. accumulate into these, run 0 into dW, db."""
    dW = args[-2]
    k, d = dW.shape
    return (
        np.empty((n_runs - 1, k, d), dW.dtype),
        np.empty((n_runs - 1, k), dW.dtype),
        np.zeros(n_runs),
    )


@njit(fastmath=EXACT)
def _linear_gather(x, args, scratch):
    """Add the partials of runs 1.. into dW and db in run order; the loss summed likewise."""
    dW, db = args[-2], args[-1]
    dW_parts, db_parts, losses = scratch
    for run in range(dW_parts.shape[0]):
        dW += dW_parts[run]
        db += db_parts[run]
    loss = 0.0
    for run in range(losses.shape[0]):
        loss += losses[run]
    return loss


@njit(inline="always")
def _run_outputs(dW, db, parts, run):
    """The zeroed (dW, db) that ``run`` accumulates into."""
    gW, gb = (dW, db) if run == 0 else (parts[0][run - 1], parts[1][run - 1])
    gW[:] = 0
    gb[:] = 0
    return gW, gb


@njit(fastmath=EXACT)
def _softmax_gradient(o, label, c):
    """Turn the logits ``o`` into c (softmax(o) - e_label) in place and return logsumexp(o) -
    o[label] in float64. Shifted by the maximum even when it is not finite, as the reference's
    cross-entropy: the row's loss and gradient are then NaN."""
    m = o[0]
    for j in range(1, o.shape[0]):
        m = o[j] if o[j] > m else m
    label_logit = np.float64(o[label]) - m
    s = 0.0
    for j in range(o.shape[0]):
        e = vexp(o[j] - m)
        o[j] = e
        s += e
    inv = like(c / s, m)
    for j in range(o.shape[0]):
        o[j] *= inv
    o[label] -= like(c, m)
    return np.log(s) - label_logit


@intrinsic
def _prefetch_row(typingctx, X, i):
    """Ask for the cache lines of the row X[i] (C-contiguous) to be brought into L2, without
    waiting for them (llvm.prefetch: read, locality 2, i.e. prefetcht1)."""

    def codegen(context, builder, signature, args):
        from numba.core import cgutils

        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        row = cgutils.get_item_pointer(
            context, builder, array_type, array, [index, context.get_constant(types.intp, 0)]
        )
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        start = builder.bitcast(row, byte_pointer)
        row_bytes = array_type.dtype.bitwidth // 8 * 1
        n_bytes = builder.mul(
            builder.extract_value(array.shape, 1), context.get_constant(types.intp, row_bytes)
        )
        with cgutils.for_range_slice(
            builder,
            context.get_constant(types.intp, 0),
            n_bytes,
            context.get_constant(types.intp, 64),
        ) as (offset, _):
            line = builder.gep(start, [offset])
            builder.call(prefetch, [line, i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return types.none(X, i), codegen


# A block of 4 rows meets the classes 4 at a time (then 2, then 1 for what is left), like a small
# GEMM: per step j, 4 loads of X and 4 of W serve 16 multiply-adds, where 4 rows x 1 class took
# 5 loads for 4 (the loop was bound by loads, the X rows re-read once per class). The 16 sums
# are scalars that LLVM keeps as 16 vector accumulators (zmm registers, no spills: checked with
# inspect_asm); each function writes the block's logits (sum + b) into G[0:4, c:c + classes].
# Indices, not row views: a view costs a reference count update, per class and row here.


@njit(fastmath=REDUCE)
def _logits4x4(G, W, b, c, X, i0, i1, i2, i3):
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = like(0.0, W[0, 0])
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = like(0.0, W[0, 0])
    for j in range(W.shape[1]):
        x0, x1, x2, x3 = X[i0, j], X[i1, j], X[i2, j], X[i3, j]
        w = W[c, j]
        s00 += w * x0
        s01 += w * x1
        s02 += w * x2
        s03 += w * x3
        w = W[c + 1, j]
        s10 += w * x0
        s11 += w * x1
        s12 += w * x2
        s13 += w * x3
        w = W[c + 2, j]
        s20 += w * x0
        s21 += w * x1
        s22 += w * x2
        s23 += w * x3
        w = W[c + 3, j]
        s30 += w * x0
        s31 += w * x1
        s32 += w * x2
        s33 += w * x3
    G[0, c], G[1, c], G[2, c], G[3, c] = s00 + b[c], s01 + b[c], s02 + b[c], s03 + b[c]
    c += 1
    G[0, c], G[1, c], G[2, c], G[3, c] = s10 + b[c], s11 + b[c], s12 + b[c], s13 + b[c]
    c += 1
    G[0, c], G[1, c], G[2, c], G[3, c] = s20 + b[c], s21 + b[c], s22 + b[c], s23 + b[c]
    c += 1
    G[0, c], G[1, c], G[2, c], G[3, c] = s30 + b[c], s31 + b[c], s32 + b[c], s33 + b[c]


@njit(fastmath=REDUCE)
def _logits4x2(G, W, b, c, X, i0, i1, i2, i3):
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = like(0.0, W[0, 0])
    for j in range(W.shape[1]):
        x0, x1, x2, x3 = X[i0, j], X[i1, j], X[i2, j], X[i3, j]
        w = W[c, j]
        s00 += w * x0
        s01 += w * x1
        s02 += w * x2
        s03 += w * x3
        w = W[c + 1, j]
        s10 += w * x0
        s11 += w * x1
        s12 += w * x2
        s13 += w * x3
    G[0, c], G[1, c], G[2, c], G[3, c] = s00 + b[c], s01 + b[c], s02 + b[c], s03 + b[c]
    c += 1
    G[0, c], G[1, c], G[2, c], G[3, c] = s10 + b[c], s11 + b[c], s12 + b[c], s13 + b[c]


@njit(fastmath=REDUCE)
def _logits4x1(G, W, b, c, X, i0, i1, i2, i3):
    s0 = s1 = s2 = s3 = like(0.0, W[0, 0])
    for j in range(W.shape[1]):
        w = W[c, j]
        s0 += w * X[i0, j]
        s1 += w * X[i1, j]
        s2 += w * X[i2, j]
        s3 += w * X[i3, j]
    G[0, c], G[1, c], G[2, c], G[3, c] = s0 + b[c], s1 + b[c], s2 + b[c], s3 + b[c]


# The gradient sums, blocked the same way: per step j the 4 X values are loaded once for the
# 4 (2, 1) rows of gW updated. gW[c, j] takes the four products one after the other: four FMAs,
# where gW + (g0 x0 + ... + g3 x3) took a multiply, three FMAs and an add.


@njit(fastmath=EXACT)
def _add_outer4x4(gW, c, G, X, i0, i1, i2, i3):
    """gW[c + q] += G[0, c + q] X[i0] + ... + G[3, c + q] X[i3] for q = 0..3."""
    a0, a1, a2, a3 = G[0, c], G[1, c], G[2, c], G[3, c]
    b0, b1, b2, b3 = G[0, c + 1], G[1, c + 1], G[2, c + 1], G[3, c + 1]
    e0, e1, e2, e3 = G[0, c + 2], G[1, c + 2], G[2, c + 2], G[3, c + 2]
    f0, f1, f2, f3 = G[0, c + 3], G[1, c + 3], G[2, c + 3], G[3, c + 3]
    for j in range(gW.shape[1]):
        x0, x1, x2, x3 = X[i0, j], X[i1, j], X[i2, j], X[i3, j]
        gW[c, j] = (((gW[c, j] + a0 * x0) + a1 * x1) + a2 * x2) + a3 * x3
        gW[c + 1, j] = (((gW[c + 1, j] + b0 * x0) + b1 * x1) + b2 * x2) + b3 * x3
        gW[c + 2, j] = (((gW[c + 2, j] + e0 * x0) + e1 * x1) + e2 * x2) + e3 * x3
        gW[c + 3, j] = (((gW[c + 3, j] + f0 * x0) + f1 * x1) + f2 * x2) + f3 * x3


@njit(fastmath=EXACT)
def _add_outer4x2(gW, c, G, X, i0, i1, i2, i3):
    a0, a1, a2, a3 = G[0, c], G[1, c], G[2, c], G[3, c]
    b0, b1, b2, b3 = G[0, c + 1], G[1, c + 1], G[2, c + 1], G[3, c + 1]
    for j in range(gW.shape[1]):
        x0, x1, x2, x3 = X[i0, j], X[i1, j], X[i2, j], X[i3, j]
        gW[c, j] = (((gW[c, j] + a0 * x0) + a1 * x1) + a2 * x2) + a3 * x3
        gW[c + 1, j] = (((gW[c + 1, j] + b0 * x0) + b1 * x1) + b2 * x2) + b3 * x3


@njit(fastmath=EXACT)
def _add_outer4x1(gW, c, G, X, i0, i1, i2, i3):
    g0, g1, g2, g3 = G[0, c], G[1, c], G[2, c], G[3, c]
    for j in range(gW.shape[1]):
        gW[c, j] = (((gW[c, j] + g0 * X[i0, j]) + g1 * X[i1, j]) + g2 * X[i2, j]) + g3 * X[i3, j]


@njit(fastmath=EXACT)
def _linear_dense_run(X, args, run, n_runs, parts):
    rows, W, b, labels, weights, scale, dW, db = args
    k = W.shape[0]
    gW, gb = _run_outputs(dW, db, parts, run)
    G = np.empty((ROWS_PER_BLOCK, k), W.dtype)  # the block's logits, then its gradients
    G_flat = G.reshape(G.size)
    maxima, label_logits = np.empty(ROWS_PER_BLOCK, W.dtype), np.empty(ROWS_PER_BLOCK)
    loss = 0.0
    start, stop = _run_range(rows.shape[0], n_runs, run)
    for first in range(start, stop, ROWS_PER_BLOCK):
        # A short last block repeats its last row, with a zero gradient.
        i0 = rows[first]
        i1 = rows[min(first + 1, stop - 1)]
        i2 = rows[min(first + 2, stop - 1)]
        i3 = rows[min(first + 3, stop - 1)]
        # The rows of a minibatch are scattered over X, so each row's first lines miss the
        # caches; the next block's rows are requested while this block computes.
        for r in range(first + ROWS_PER_BLOCK, min(first + 2 * ROWS_PER_BLOCK, stop)):
            _prefetch_row(X, rows[r])
        for c in range(0, k - 3, 4):
            _logits4x4(G, W, b, c, X, i0, i1, i2, i3)
        c = k - k % 4
        if k - c >= 2:
            _logits4x2(G, W, b, c, X, i0, i1, i2, i3)
            c += 2
        if c < k:
            _logits4x1(G, W, b, c, X, i0, i1, i2, i3)
        loss += _block_softmax_gradient(
            G, G_flat, maxima, label_logits, rows, first, stop, labels, weights, scale
        )
        for c in range(0, k - 3, 4):
            _add_outer4x4(gW, c, G, X, i0, i1, i2, i3)
        c = k - k % 4
        if k - c >= 2:
            _add_outer4x2(gW, c, G, X, i0, i1, i2, i3)
            c += 2
        if c < k:
            _add_outer4x1(gW, c, G, X, i0, i1, i2, i3)
        for c in range(k):
            gb[c] += (G[0, c] + G[1, c]) + (G[2, c] + G[3, c])
    parts[2][run] = loss


@njit(fastmath=EXACT)
def _block_softmax_gradient(
    G, G_flat, maxima, label_logits, rows, first, stop, labels, weights, scale
):
    """Each row r of the block's logits G (rows[first + r], or none past ``stop``) as
    _softmax_gradient would leave it (zero if unlabelled); returns the block's weighted loss.

    The exponentials go in ONE loop over the whole block (``G_flat``, G's C-contiguous view):
    row by row, a 10-wide row left the vector loop idle and its exps ran scalar (the softmax
    took 40% of a (256 rows, k = 10, d = 64) call). ``maxima`` (G's dtype) and ``label_logits``
    (float64): ROWS_PER_BLOCK values of scratch each."""
    k = G.shape[1]
    for r in range(ROWS_PER_BLOCK):
        m = G[r, 0]
        for j in range(1, k):
            m = G[r, j] if G[r, j] > m else m
        i = rows[first + r] if first + r < stop else -1
        label = labels[i] if i >= 0 else -1
        label_logits[r] = np.float64(G[r, label]) - m if label >= 0 else 0.0
        maxima[r] = m
        for j in range(k):
            G[r, j] -= m
    for t in range(G_flat.shape[0]):
        G_flat[t] = vexp(G_flat[t])
    loss = 0.0
    for r in range(ROWS_PER_BLOCK):
        i = rows[first + r] if first + r < stop else -1
        label = labels[i] if i >= 0 else -1
        if label < 0:
            G[r] = 0
            continue
        s = 0.0
        for j in range(k):
            s += G[r, j]
        c = scale * weights[i]
        inv = like(c / s, maxima[r])
        for j in range(k):
            G[r, j] *= inv
        G[r, label] -= like(c, maxima[r])
        loss += weights[i] * (np.log(s) - label_logits[r])
    return loss


@njit(fastmath=REDUCE)
def _sparse_dot(w, data, indices, lo, hi):
    s = like(0.0, w[0])
    for p in range(lo, hi):
        s += data[p] * w[indices[p]]
    return s


@njit(fastmath=EXACT)
def _linear_csr_run(X_data, args, run, n_runs, parts):
    X_indices, X_indptr, rows, W, b, labels, weights, scale, dW, db = args
    k = W.shape[0]
    gW, gb = _run_outputs(dW, db, parts, run)
    o = np.empty(k, W.dtype)
    loss = 0.0
    start, stop = _run_range(rows.shape[0], n_runs, run)
    for t in range(start, stop):
        i = rows[t]
        label = labels[i]
        if label < 0:
            continue
        lo, hi = X_indptr[i], X_indptr[i + 1]
        for c in range(k):
            o[c] = _sparse_dot(W[c], X_data, X_indices, lo, hi) + b[c]
        loss += weights[i] * _softmax_gradient(o, label, scale * weights[i])
        for c in range(k):
            gc, gw = o[c], gW[c]
            for p in range(lo, hi):  # duplicate indices add up
                gw[X_indices[p]] += gc * X_data[p]
            gb[c] += gc
    parts[2][run] = loss


linear_cross_entropy = _kernel(
    "linear_cross_entropy",
    "X, rows, W, b, labels, weights, scale, dW, db",
    _linear_dense_run,
    parts=_Parts(_dense_runs, _linear_scratch, _linear_gather),
)
linear_cross_entropy_csr = _kernel(
    "linear_cross_entropy_csr",
    "X_data, X_indices, X_indptr, rows, W, b, labels, weights, scale, dW, db",
    _linear_csr_run,
    parts=_Parts(_csr_runs, _linear_scratch, _linear_gather),
)
