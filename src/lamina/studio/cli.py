"""``lamina studio``: serve the studio page (registered lazily by :mod:`lamina.cli`)."""

from __future__ import annotations

import click

from ..cli_options import runtime_options
from ..errors import LaminaError
from .backend import BackendConfig


def _grounding(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        role, sep, value = pair.partition("=")
        if not sep or role not in ("detector", "segmenter", "matting") or not value:
            raise LaminaError(f"--grounding-model {pair!r}: use detector=ID, segmenter=ID or matting=ID")
        out[role] = value
    return out


@click.command("studio")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to serve on (127.0.0.1: this machine only; 0.0.0.0 opens it to your network)")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="port (default: the first free one from 7860)")
@click.option("--model", default=None, help="LayeringDiff FBDD model: folder, hub id, or builtin (the default)")
@runtime_options
@click.option("--furrygan", "furrygan_checkpoint", default="builtin", show_default=True,
              help="FurryGAN checkpoint: builtin, builtin-64, a run or export folder")
@click.option("--bfs-model", default="builtin", show_default=True, help="BFS model: builtin, folder or hub id")
@click.option("--t2i", default=None, help="diffusers text-to-image model (hub id or folder) for Text -> layers")
@click.option("--grounding-model", "grounding", multiple=True, metavar="ROLE=ID",
              help="objects by phrase: detector=ID, segmenter=ID, matting=ID (hub ids or local folders)")
@click.option("--steps", type=click.IntRange(1), default=None, help="FBDD denoising steps (default: the model's)")
@click.option("--max-pixels", type=click.IntRange(1), default=16_000_000, show_default=True,
              help="refuse uploads with more pixels (checked from the file header)")
@click.option("--concurrency", type=click.IntRange(1), default=1, show_default=True,
              help="model calls run at once; the others wait in a queue")
@click.option("--open", "open_browser", is_flag=True, help="open the page in the default browser")
def studio(host: str, port: int | None, model: str | None, device: str, dtype: str, threads: int | None,
           furrygan_checkpoint: str, bfs_model: str, t2i: str | None, grounding: tuple[str, ...], steps: int | None,
           max_pixels: int, concurrency: int, open_browser: bool) -> None:
    """A local browser app: photo -> layers, background -> layers (BFS), FurryGAN, layer editing, downloads."""
    from ..devices import set_threads
    from ..extras import require

    require("gradio", "studio")  # a one-line error naming the extra when gradio is missing
    set_threads(threads)
    from .app import launch
    from .backend import Backend
    from .handlers import StudioLimits

    config = BackendConfig(model=model, device=device, dtype=dtype, grounding=_grounding(grounding), t2i=t2i,
                           furrygan=furrygan_checkpoint, bfs_model=bfs_model, steps=steps)
    launch(Backend(config), host=host, port=port, limits=StudioLimits(max_pixels=max_pixels),
           concurrency=concurrency, open_browser=open_browser)
