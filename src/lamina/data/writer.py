"""Write procedural datasets to disk: a PNG stack per sample, or ``.npz`` shards.

Sample ``i`` is ``generate_scene(scene_seed(seed, i), config)``, the same scene as item
``i`` of ``ProceduralScenes(config, n, seed)``. The output folder is built under a
temporary name and moved into place when complete, and holds ``dataset.json``: format,
count, size, seed, the full config, and per sample its seed, caption, box and file.

* ``"stack"``: ``000000/`` ... one folder per sample, a PNG stack readable by
  :func:`lamina.io.load` (background + one layer per object, captions and boxes in
  ``layers.json``), plus ground truth ``foreground.png`` (RGBA), ``object_alpha.png`` and
  ``effects_alpha.png`` (greyscale).
* ``"shards"``: ``shard_00000.npz`` ... with ``shard_size`` samples each, ``uint8`` arrays
  ``composite`` ``[N, H, W, 3]``, ``foreground`` ``[N, H, W, 4]``, ``background``
  ``[N, H, W, 3]``, ``object_alpha`` and ``effects_alpha`` ``[N, H, W]``, plus ``box``
  int32 ``[N, 4]``, ``seed`` int64 ``[N]`` and ``caption`` (unicode) ``[N]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputExistsError
from ..layers import to_uint8
from ..progress import progress as progress_bar
from .config import DEFAULT_CONFIG, SceneConfig
from .scenes import Scene, generate_scene, scene_seed

FORMATS = ("stack", "shards")
INDEX_JSON = "dataset.json"
#: Arrays of a shard (all uint8 images) in the order they are written.
SHARD_ARRAYS = ("composite", "foreground", "background", "object_alpha", "effects_alpha")


def write_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    config: SceneConfig = DEFAULT_CONFIG,
    format: str = "stack",
    overwrite: bool = False,
    progress: bool = True,
    shard_size: int = 1000,
) -> Path:
    """Generate ``n`` scenes into ``out_dir`` (see the module docstring); returns ``out_dir``.

    Args:
        size: canvas size (int or ``(width, height)``), overriding ``config.size``.
        format: ``"stack"`` (PNG stack folder per sample) or ``"shards"`` (``.npz`` files).
        overwrite: replace an existing ``out_dir``; otherwise :class:`OutputExistsError`.
        progress: show a progress bar (also silenced by ``LAMINA_PROGRESS=0``).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if n < 1 or shard_size < 1:
        raise ValueError(f"n and shard_size must be positive, got {n}, {shard_size}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output already exists (pass overwrite=True / --overwrite to replace it)")
    from ..io import atomic_output  # lamina.io (and psd-tools) load only when writing

    config = config if size is None else config.with_size(size)
    records: list[dict[str, Any]] = []
    with atomic_output(out, overwrite) as tmp:
        tmp.mkdir()
        scenes = (generate_scene(scene_seed(seed, i), config) for i in range(n))
        bar = progress_bar(scenes, desc=f"synth {format}", total=n, disable=None if progress else True)
        if format == "stack":
            for i, scene in enumerate(bar):
                records.append(_write_stack(tmp, i, scene))
        else:
            batch: list[Scene] = []
            for i, scene in enumerate(bar):
                batch.append(scene)
                if len(batch) == shard_size or i == n - 1:
                    records += _write_shard(tmp, i // shard_size, batch, i + 1 - len(batch))
                    batch = []
        index = {"format": format, "n": n, "size": list(config.size), "seed": seed, "config": config.to_dict(),
                 "samples": records}
        (tmp / INDEX_JSON).write_text(json.dumps(index, indent=1))
    return out


def _record(i: int, scene: Scene) -> dict[str, Any]:
    return {"index": i, "seed": scene.seed, "caption": scene.caption, "box": list(scene.box),
            "objects": len(scene.instances)}


def _write_stack(root: Path, i: int, scene: Scene) -> dict[str, Any]:
    from ..io import save, write_png

    folder = root / f"{i:06d}"
    save(scene.to_layered(), folder)
    write_png(scene.foreground, folder / "foreground.png")
    write_png(scene.object_alpha, folder / "object_alpha.png")
    write_png(scene.effects_alpha, folder / "effects_alpha.png")
    return {**_record(i, scene), "path": folder.name}


def _write_shard(root: Path, shard: int, scenes: list[Scene], first: int) -> list[dict[str, Any]]:
    name = f"shard_{shard:05d}.npz"
    arrays = {key: np.stack([to_uint8(getattr(s, key)) for s in scenes]) for key in SHARD_ARRAYS}
    np.savez_compressed(root / name, **arrays, box=np.array([s.box for s in scenes], np.int32),
                        seed=np.array([s.seed for s in scenes], np.int64),
                        caption=np.array([s.caption for s in scenes]))
    return [{**_record(first + k, s), "shard": name, "row": k} for k, s in enumerate(scenes)]
