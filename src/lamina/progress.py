"""Progress bars for every long loop (tqdm on stderr; off when ``LAMINA_PROGRESS=0``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, disable: bool | None = None) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar labelled ``desc``.

    ``disable=None`` shows the bar unless the environment sets ``LAMINA_PROGRESS=0``.
    """
    if disable is None:
        disable = os.environ.get("LAMINA_PROGRESS", "1") == "0"
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True, leave=False))
