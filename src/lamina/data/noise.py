"""Smooth random fields and anti-aliased periodic patterns, vectorised for speed.

Low-frequency content (gradients, value noise, colour washes) is built on a few small grids
of control points and resampled to the canvas with cached cubic B-spline matrices: a field
is ``My @ G @ Mx.T``, two small matrix products per colour channel instead of per-pixel
work. Uniform cubic B-splines reproduce linear functions exactly, so a control grid that is
linear in position gives an exact linear gradient, and a convex combination of control
values never leaves their range.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

try:  # the ufunc behind np.clip, without its Python wrapper (which costs more than the work on small arrays)
    from numpy._core.umath import clip as _clip_ufunc
except ImportError:  # pragma: no cover - older NumPy
    _clip_ufunc = np.clip

#: Control points added per axis by a cubic B-spline (one before, two after the cells).
SPLINE_MARGIN = 3


def clip(x: np.ndarray, lo: float = 0.0, hi: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    """``np.clip`` with less overhead (``lo``/``hi`` are Python floats)."""
    return _clip_ufunc(x, lo, hi) if out is None else _clip_ufunc(x, lo, hi, out)


@lru_cache(maxsize=2048)
def bspline_matrix(cells: int, n: int) -> np.ndarray:
    """``[n, cells + 3]`` cubic B-spline weights resampling control points to ``n`` samples.

    The ``n`` samples (pixel centres) span ``cells`` spline segments; each row sums to 1.
    """
    p = (np.arange(n) + 0.5) * (cells / n)
    i = np.minimum(p.astype(np.int64), cells - 1)
    f = p - i
    weights = ((1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3)
    m = np.zeros((n, cells + SPLINE_MARGIN), np.float32)
    rows = np.arange(n)
    for k, w in enumerate(weights):
        m[rows, i + k] = w / 6.0
    m.setflags(write=False)
    return m


class FieldBasis:
    """Multi-octave B-spline basis of an ``h x w`` image: octave ``o`` has ``cells * 2**o`` cells.

    Control grids are block-diagonal ``[k, Sy, Sx]`` arrays (one block per octave), so all
    octaves resample in a single pair of matrix products. Fields are linear combinations
    of the constant 1, the ramps ``x`` and ``y`` (in [0, 1] across the image) and noise.
    """

    def __init__(self, h: int, w: int, cells: int, octaves: int) -> None:
        self.h, self.w = h, w
        cy = [cells << o for o in range(octaves)]
        cx = [max(1, round(c * w / h)) for c in cy]
        self.my = np.concatenate([bspline_matrix(c, h) for c in cy], axis=1)
        self.mxt = np.ascontiguousarray(np.concatenate([bspline_matrix(c, w) for c in cx], axis=1).T)
        sy, sx = self.my.shape[1], self.mxt.shape[0]
        # Octave of each control point (-1 off the diagonal blocks), for per-octave amplitudes.
        self.octave = np.full((sy, sx), octaves, np.int64)
        oy = np.cumsum([0] + [c + SPLINE_MARGIN for c in cy])
        ox = np.cumsum([0] + [c + SPLINE_MARGIN for c in cx])
        for o in range(octaves):
            self.octave[oy[o]:oy[o + 1], ox[o]:ox[o + 1]] = o
        self.octaves = octaves
        # Constant and linear fields live in the first (coarsest) block.
        self.linear = np.zeros((3, sy, sx), np.float32)
        by, bx = cy[0] + SPLINE_MARGIN, cx[0] + SPLINE_MARGIN
        self.linear[0, :by, :bx] = 1.0
        self.linear[1, :by, :bx] = ((np.arange(bx) - 1.0) / cx[0])[None, :]
        self.linear[2, :by, :bx] = ((np.arange(by) - 1.0) / cy[0])[:, None]

    def noise(self, rng: np.random.Generator, k: int, persistence: float) -> np.ndarray:
        """``[k, Sy, Sx]`` control grids of zero-mean value noise, octave amplitudes ``persistence**o``.

        The resampled field has a standard deviation of roughly 0.15 per unit amplitude.
        """
        amplitude = np.append(persistence ** np.arange(self.octaves, dtype=np.float32), np.float32(0.0))
        g = rng.random((k,) + self.octave.shape, dtype=np.float32)
        g -= 0.5
        g *= amplitude.take(self.octave)
        return g

    def render(self, grids: np.ndarray) -> np.ndarray:
        """Resample ``[k, Sy, Sx]`` control grids to ``float32`` ``[k, h, w]``."""
        return self.my @ grids @ self.mxt

    def mix(self, weights: np.ndarray, grids: np.ndarray) -> np.ndarray:
        """Render ``[c, k] @ grids``: ``c`` fields mixing the ``k`` control grids, ``[c, h, w]``."""
        sy, sx = grids.shape[1:]
        return self.render((weights.astype(np.float32) @ grids.reshape(len(grids), -1)).reshape(-1, sy, sx))


@lru_cache(maxsize=2048)
def field_basis(h: int, w: int, cells: int, octaves: int) -> FieldBasis:
    """Cached :class:`FieldBasis` (bases are reused for every scene of a size)."""
    return FieldBasis(h, w, cells, octaves)


def octaves_for(size: int, cells: int, finest_px: float) -> int:
    """Number of octaves whose finest cells stay at least ``finest_px`` pixels wide."""
    n = 1
    while size / (cells << n) >= finest_px:
        n += 1
    return n


def square_wave(t: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Anti-aliased square wave in ``[-1, 1]`` of period 1, edges ``width`` periods wide.

    Edges at ``t = 0.25`` and ``0.75`` (mod 1). Wider edges than half a period lower the
    contrast, as blurring a square wave does, so this doubles as a defocus blur.
    """
    tri = t - np.floor(t)
    tri -= 0.5
    tri = np.abs(tri, out=tri)
    tri *= -4.0 / np.maximum(2.0 * width, 1e-6)  # triangle wave of slope +-4, scaled
    tri += 1.0 / np.maximum(2.0 * width, 1e-6)
    return clip(tri, -1.0, 1.0, out=tri)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """``3x^2 - 2x^3`` of ``x`` clipped to [0, 1] (clips ``x`` in place)."""
    clip(x, 0.0, 1.0, out=x)
    return x * x * (3.0 - 2.0 * x)
