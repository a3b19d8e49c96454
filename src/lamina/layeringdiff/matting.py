"""Closed-form alpha matting and multi-level foreground estimation, in NumPy and SciPy.

The two solvers of the weight-free matting chain, written for lamina so that a ``decompose``
run needs no JIT compiler (pymatting compiles or loads 29 numba functions when it is imported,
about 1.5 s of every run):

* :func:`closed_form_alpha`: Levin, Lischinski and Weiss, "A Closed-Form Solution to Natural
  Image Matting" (TPAMI 2008). The matting Laplacian (their Eq. 12) over ``3 x 3`` windows,
  restricted to the windows that touch an unknown pixel, and the alpha of the unknown pixels
  from ``L_UU alpha_U = -L_UK alpha_K`` (the trimap's sure pixels as boundary values), solved
  exactly by a sparse Cholesky-style factorisation (SuperLU, minimum-degree ordering).
* :func:`estimate_foreground_ml`: Germer, Uelwer, Conrad and Harmeling, "Fast Multi-Level
  Foreground Estimation" (ICPR 2020): foreground and background colours ``F, B`` that explain
  the image, ``I = alpha F + (1 - alpha) B``, smooth where alpha is, solved coarse to fine.

Same defaults as pymatting (``epsilon = 1e-7``, window radius 1; ``regularization = 1e-5``,
gradient weight 1, 10 / 2 iterations below / above 32 px); the tests compare both with it.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import LaminaError

#: Regulariser of each window's colour covariance (Levin et al.'s epsilon).
CF_EPSILON = 1e-7
#: Foreground estimation: smoothness weight and weight of alpha's gradient (Germer et al.'s epsilon and omega).
ML_REGULARIZATION, ML_GRADIENT_WEIGHT = 1e-5, 1.0
#: Foreground estimation: iterations per level up to / above :data:`ML_SMALL_SIZE` pixels a side.
ML_SMALL_ITERATIONS, ML_BIG_ITERATIONS, ML_SMALL_SIZE = 10, 2, 32


# ------------------------------------------------------------------------- closed-form alpha
def _window_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets ``[k]`` of the ``k = (2r + 1)^2`` pixels of a window, row-major."""
    steps = np.arange(-radius, radius + 1)
    return np.repeat(steps, steps.size), np.tile(steps, steps.size)


def closed_form_alpha(image: np.ndarray, trimap: np.ndarray, epsilon: float = CF_EPSILON, radius: int = 1
                      ) -> np.ndarray:
    """Alpha ``float64`` ``[H, W]`` in ``[0, 1]`` of ``image`` ``[H, W, 3]`` (in ``[0, 1]``) for a trimap.

    ``trimap`` ``[H, W]``: ``>= 0.9`` sure foreground, ``<= 0.1`` sure background, else unknown.
    Sure pixels keep their value; the unknown ones minimise ``alpha^T L alpha`` (Levin et al.,
    Eq. 12 and Sec. 3.1) given them.
    """
    from scipy import sparse
    from scipy.sparse import linalg

    image = np.asarray(image, np.float64)
    height, width = trimap.shape
    if image.shape != (height, width, 3):
        raise LaminaError(f"closed-form matting needs an [H, W, 3] image of the trimap's size {height}x{width}, "
                          f"got shape {image.shape}")
    foreground = trimap >= 0.9
    unknown = ~(foreground | (trimap <= 0.1))
    alpha = np.clip(trimap, 0.0, 1.0).astype(np.float64)
    if not unknown.any():
        return alpha
    if unknown.all():
        raise LaminaError("closed-form matting needs at least one sure foreground or background pixel")
    size = 2 * radius + 1
    area = size * size
    dy, dx = _window_offsets(radius)
    # Windows (by their centre, inside the image) that hold at least one unknown pixel.
    touched = np.zeros((height, width), bool)
    for oy, ox in zip(dy, dx, strict=True):
        touched[radius:height - radius, radius:width - radius] |= unknown[
            radius + oy:height - radius + oy, radius + ox:width - radius + ox]
    cy, cx = np.nonzero(touched)
    py, px = cy[:, None] + dy[None], cx[:, None] + dx[None]  # [N, k] pixels of each window
    colours = image[py, px]  # [N, k, 3]
    centred = colours - colours.mean(axis=1, keepdims=True)
    covariance = (centred.transpose(0, 2, 1) @ centred + epsilon * np.eye(3)) / area  # Sigma_k + eps/|w| I
    projected = centred @ np.linalg.inv(covariance)  # [N, k, 3]
    # L_ij = sum_k [delta_ij - (1 + (I_i - mu_k)^T (Sigma_k + eps/|w| I)^-1 (I_j - mu_k)) / |w|]  (Eq. 12)
    values = np.eye(area) - (1.0 + projected @ centred.transpose(0, 2, 1)) / area  # [N, k, k]
    # Rows of unknown pixels only, each as a (4r + 1)^2 stencil of its neighbours.
    reach = 2 * radius
    stencil = 2 * reach + 1
    rank = np.full(height * width, -1, np.int64)
    rank[unknown.ravel()] = np.arange(int(unknown.sum()))
    row_rank = rank[py * width + px]  # [N, k]
    slot = (dy[None, :] - dy[:, None] + reach) * stencil + (dx[None, :] - dx[:, None] + reach)  # [k, k]
    keep = np.broadcast_to((row_rank >= 0)[:, :, None], values.shape)
    flat = (row_rank[:, :, None] * stencil**2 + slot[None])[keep]
    count = int(rank.max()) + 1
    rows = np.bincount(flat, weights=values[keep], minlength=count * stencil**2).reshape(count, stencil**2)
    # Neighbour of each stencil slot, and whether it is inside the image.
    uy, ux = np.divmod(np.flatnonzero(unknown), width)
    sy, sx = np.divmod(np.arange(stencil**2), stencil)
    ny, nx = uy[:, None] + sy[None] - reach, ux[:, None] + sx[None] - reach
    inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
    neighbour = np.where(inside, ny * width + nx, 0)
    neighbour_rank = np.where(inside, rank[neighbour], -1)
    known_value = np.where(inside & (neighbour_rank < 0), foreground.ravel()[neighbour], 0.0)
    rhs = -(rows * known_value).sum(axis=1)  # -L_UK alpha_K
    entry = (neighbour_rank >= 0) & (rows != 0.0)
    # Rows in raster order with their slots in raster order: columns already sorted. L is symmetric,
    # so these CSR arrays are also its CSC arrays.
    matrix = sparse.csc_matrix((rows[entry], neighbour_rank[entry], np.concatenate([[0], np.cumsum(entry.sum(1))])),
                               shape=(count, count))
    try:
        factor = linalg.splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                             options={"SymmetricMode": True})
    except RuntimeError:  # exactly singular (an unknown region no window links to a sure pixel): pivot
        factor = linalg.splu(matrix, permc_spec="MMD_AT_PLUS_A")
    alpha.ravel()[unknown.ravel()] = factor.solve(rhs)
    return np.clip(alpha, 0.0, 1.0)


# -------------------------------------------------------------------- multi-level foreground
def _neighbour_sum(out: np.ndarray, weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``out[c] = sum_d weights[d] * values[c]`` at the 4-neighbour ``d`` (left, right, up, down; edges repeated)."""
    left, right, up, down = weights
    np.multiply(left[:, 1:], values[:, :, :-1], out=out[:, :, 1:])
    out[:, :, 0] = left[:, 0] * values[:, :, 0]
    out[:, :, :-1] += right[:, :-1] * values[:, :, 1:]
    out[:, :, -1] += right[:, -1] * values[:, :, -1]
    out[:, 1:] += up[1:] * values[:, :-1]
    out[:, 0] += up[0] * values[:, 0]
    out[:, :-1] += down[:-1] * values[:, 1:]
    out[:, -1] += down[-1] * values[:, -1]
    return out


def _nearest(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """``values`` ``[C, h, w]`` resized to ``[C, height, width]`` by nearest neighbour (top-left rule)."""
    h, w = values.shape[-2:]
    rows = np.minimum(np.arange(height) * h // height, h - 1)
    cols = np.minimum(np.arange(width) * w // width, w - 1)
    return values[..., rows[:, None], cols]


def _relax(both: np.ndarray, image: np.ndarray, alpha: np.ndarray, regularization: float, gradient_weight: float,
           iterations: int) -> np.ndarray:
    """``iterations`` Jacobi sweeps of one level: ``both`` ``[6, h, w]`` = ``F`` then ``B``, updated."""
    height, width = alpha.shape
    step = np.zeros((4, height, width), np.float32)  # |alpha - alpha at the neighbour|: left, right, up, down
    step[0, :, 1:] = np.abs(alpha[:, 1:] - alpha[:, :-1])
    step[1, :, :-1] = step[0, :, 1:]
    step[2, 1:] = np.abs(alpha[1:] - alpha[:-1])
    step[3, :-1] = step[2, 1:]
    weights = np.float32(regularization) + np.float32(gradient_weight) * step
    total = weights.sum(axis=0)
    rest = 1.0 - alpha
    # Per pixel: [a^2 + s, a(1-a); a(1-a), (1-a)^2 + s] [F; B] = [a I + sum w F_n; (1-a) I + sum w B_n]
    a00, a11, a01 = alpha * alpha + total, rest * rest + total, alpha * rest
    inverse = 1.0 / (a00 * a11 - a01 * a01)
    c00, c01, c11 = inverse * a11, -inverse * a01, inverse * a00
    data = np.concatenate([alpha * image, rest * image])
    rhs, new = np.empty_like(both), np.empty_like(both)
    for _ in range(iterations):
        _neighbour_sum(rhs, weights, both)
        rhs += data
        np.multiply(c00, rhs[:3], out=new[:3])
        new[:3] += c01 * rhs[3:]
        np.multiply(c01, rhs[:3], out=new[3:])
        new[3:] += c11 * rhs[3:]
        np.clip(new, 0.0, 1.0, out=new)
        both, new = new, both
    return both


def estimate_foreground_ml(image: np.ndarray, alpha: np.ndarray, regularization: float = ML_REGULARIZATION,
                           gradient_weight: float = ML_GRADIENT_WEIGHT, small_iterations: int = ML_SMALL_ITERATIONS,
                           big_iterations: int = ML_BIG_ITERATIONS, small_size: int = ML_SMALL_SIZE
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background colours ``float32`` ``[H, W, 3]`` in ``[0, 1]`` of ``image`` under ``alpha``.

    ``image`` ``[H, W, 3]`` in ``[0, 1]``, ``alpha`` ``[H, W]`` in ``[0, 1]``. Germer et al.'s
    multi-level scheme: levels of side ``side^(i/n)`` for ``i = 0..n`` (``n = ceil(log2(side))``),
    each started from the level below (nearest neighbour, the first from the mean colours of the
    sure pixels) and relaxed by Jacobi sweeps of the per-pixel ``2 x 2`` systems (the paper's
    update, with all neighbours from the previous sweep).
    """
    height, width = alpha.shape
    if np.shape(image) != (height, width, 3):
        raise LaminaError(f"foreground estimation needs an [H, W, 3] image of alpha's size {height}x{width}, "
                          f"got shape {np.shape(image)}")
    colour = np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1))
    alpha = np.asarray(alpha, np.float32)
    means = [colour[:, select].mean(axis=1) if select.any() else np.zeros(3, np.float32)
             for select in (alpha > 0.9, alpha < 0.1)]
    both = np.concatenate(means).astype(np.float32).reshape(6, 1, 1)
    levels = max(1, math.ceil(math.log2(max(height, width))))
    for level in range(levels + 1):
        h, w = round(height ** (level / levels)), round(width ** (level / levels))
        iterations = small_iterations if max(h, w) <= small_size else big_iterations
        both = _relax(_nearest(both, h, w), _nearest(colour, h, w), _nearest(alpha, h, w), regularization,
                      gradient_weight, iterations)
    return both[:3].transpose(1, 2, 0), both[3:].transpose(1, 2, 0)
