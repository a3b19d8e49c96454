"""Alpha compositing: the Porter-Duff "over" operator and premultiplication.

Every function here works on torch tensors with the colour channels on one axis
(``dim``, default ``-3`` for ``[..., 4, H, W]``; pass ``dim=-1`` for channel-last
``[..., H, W, 4]`` arrays viewed with ``torch.from_numpy``). Values are in ``[0, 1]``.
"Straight" RGBA stores colour independent of alpha; "premultiplied" stores ``rgb * alpha``.
All functions are differentiable, so the methods use them inside their losses too.

The over operator (Porter & Duff 1984), premultiplied form, for source ``s`` over ``d``::

    C'_o = C'_s + C'_d (1 - a_s)          a_o = a_s + a_d (1 - a_s)

i.e. the same affine update for all four premultiplied channels.

Blend modes (W3C Compositing and Blending Level 1, separable modes): with backdrop colour
``C_b`` (alpha ``a_b``) and source colour ``C_s`` (alpha ``a_s``), the source is first
mixed with the backdrop, ``C'_s = (1 - a_b) C_s + a_b B(C_b, C_s)``, then drawn with the
over operator above. ``B`` is ``C_s`` for ``"normal"``, ``C_b C_s`` for ``"multiply"`` and
``C_b + C_s - C_b C_s`` for ``"screen"``. With premultiplied backdrop ``c_b = a_b C_b``
these need no division: multiply ``C'_s = C_s (1 - a_b + c_b)``, screen ``C'_s = C_s + c_b - c_b C_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

#: Alpha below this is treated as fully transparent when un-premultiplying (colour = 0).
UNPREMULTIPLY_EPS = 1e-8

#: Blend modes of :class:`lamina.Layer` (W3C separable blend modes; names as in CSS ``mix-blend-mode``).
BLEND_MODES = ("normal", "multiply", "screen")


def _multiply(backdrop: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return backdrop * source


def _screen(backdrop: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return backdrop + source - backdrop * source


def _normal(backdrop: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return source


_BLEND_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "normal": _normal, "multiply": _multiply, "screen": _screen,
}


def blend_function(mode: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The separable blend function ``B(C_b, C_s)`` of ``mode`` (straight colours in ``[0, 1]``)."""
    if mode not in _BLEND_FUNCTIONS:
        raise ValueError(f"unknown blend mode {mode!r}; choose from {', '.join(BLEND_MODES)}")
    return _BLEND_FUNCTIONS[mode]


def blended_source(
    source: torch.Tensor, backdrop: torch.Tensor, backdrop_alpha: torch.Tensor, mode: str
) -> torch.Tensor:
    """``C'_s = (1 - a_b) C_s + a_b B(C_b, C_s)``: the source colour after blending with the backdrop.

    Args:
        source: straight source colour ``C_s`` ``[..., 3, H, W]``.
        backdrop: premultiplied backdrop colour ``c_b = a_b C_b`` (same shape).
        backdrop_alpha: ``a_b`` ``[..., 1, H, W]``.
    Returns:
        Straight ``C'_s``, to be drawn with the over operator at the source's alpha.
    """
    if mode == "normal":
        return source
    if mode == "multiply":
        return source * (1.0 - backdrop_alpha + backdrop)
    if mode == "screen":
        return source + backdrop - backdrop * source
    raise ValueError(f"unknown blend mode {mode!r}; choose from {', '.join(BLEND_MODES)}")


def _split(rgba: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    if rgba.shape[dim] != 4:
        raise ValueError(f"expected 4 channels (RGBA) on axis {dim}, got shape {tuple(rgba.shape)}")
    return rgba.narrow(dim, 0, 3), rgba.narrow(dim, 3, 1)


def premultiply(rgba: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Straight ``[..., 4, H, W]`` RGBA -> premultiplied (``rgb * a``, ``a``)."""
    rgb, a = _split(rgba, dim)
    return torch.cat([rgb * a, a], dim=dim)


def unpremultiply(rgba: torch.Tensor, dim: int = -3, eps: float = UNPREMULTIPLY_EPS) -> torch.Tensor:
    """Premultiplied ``[..., 4, H, W]`` -> straight RGBA; colour is 0 where ``a <= eps``.

    Colours are clamped to ``[0, 1]`` so rounding in the premultiplied values cannot push
    them out of range.
    """
    rgb_p, a = _split(rgba, dim)
    safe = torch.where(a > eps, a, torch.ones_like(a))
    rgb = torch.where(a > eps, rgb_p / safe, torch.zeros_like(rgb_p)).clamp(0.0, 1.0)
    return torch.cat([rgb, a], dim=dim)


def over_premultiplied(
    src: torch.Tensor, dst: torch.Tensor, dim: int = -3, blend_mode: str = "normal"
) -> torch.Tensor:
    """``src`` over ``dst``, both premultiplied ``[..., 4, H, W]``; returns premultiplied.

    With a ``blend_mode`` other than ``"normal"`` the source colour is first blended with
    ``dst`` (see the module docstring).
    """
    rgb_s, a_s = _split(src, dim)
    if blend_mode == "normal":
        return src + dst * (1.0 - a_s)
    rgb_d, a_d = _split(dst, dim)
    # a_s C'_s from premultiplied c_s = a_s C_s: multiply c_s (1 - a_d + c_d); screen c_s + a_s c_d - c_d c_s.
    if blend_mode == "multiply":
        rgb = rgb_s * (1.0 - a_d + rgb_d)
    elif blend_mode == "screen":
        rgb = rgb_s + a_s * rgb_d - rgb_d * rgb_s
    else:
        raise ValueError(f"unknown blend mode {blend_mode!r}; choose from {', '.join(BLEND_MODES)}")
    return torch.cat([rgb, a_s], dim=dim) + dst * (1.0 - a_s)


def over(src: torch.Tensor, dst: torch.Tensor, dim: int = -3, blend_mode: str = "normal") -> torch.Tensor:
    """``src`` over ``dst``, both straight RGBA ``[..., 4, H, W]``; returns straight RGBA.

    ``blend_mode`` (``"normal"``, ``"multiply"``, ``"screen"``) mixes the source colour with ``dst`` first.
    """
    out = over_premultiplied(premultiply(src, dim), premultiply(dst, dim), dim, blend_mode)
    return unpremultiply(out, dim)


def composite_stack(
    layers: torch.Tensor | Sequence[torch.Tensor], dim: int = -3, blend_modes: Sequence[str] | None = None
) -> torch.Tensor:
    """Composite straight-RGBA layers back to front (index 0 is the bottom).

    Args:
        layers: ``[L, ..., 4, H, W]`` tensor or a sequence of ``[..., 4, H, W]`` tensors.
        dim: channel axis of each layer.
        blend_modes: one blend mode per layer (the bottom one's is unused: nothing is below it);
            all ``"normal"`` when None.
    Returns:
        Straight RGBA ``[..., 4, H, W]``.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("composite_stack needs at least one layer")
    modes = list(blend_modes) if blend_modes is not None else ["normal"] * len(layers)
    if len(modes) != len(layers):
        raise ValueError(f"composite_stack got {len(modes)} blend modes for {len(layers)} layers")
    acc = premultiply(layers[0], dim)
    for layer, mode in zip(layers[1:], modes[1:], strict=True):
        acc = over_premultiplied(premultiply(layer, dim), acc, dim, mode)
    return unpremultiply(acc, dim)


def blend(foreground: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The matting equation ``I = alpha * F + (1 - alpha) * B`` (opaque background).

    Args:
        foreground: ``[N, C, H, W]`` straight colour.
        alpha: ``[N, 1, H, W]`` in ``[0, 1]``.
        background: ``[N, C, H, W]``.
    Returns:
        ``[N, C, H, W]``; works for any value range (e.g. tanh outputs in ``[-1, 1]``).
    """
    return alpha * foreground + (1.0 - alpha) * background
