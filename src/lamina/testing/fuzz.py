"""Malformed inputs for every format lamina reads, and a runner that feeds them to every reading command.

:func:`generate_cases` writes files into a folder: valid layered files (PSD, ORA, PNG stack;
8- and 16-bit; blend modes, offsets) and plain images in odd modes (CMYK, LA, P, I;16, F,
1-bit, 16-bit colour), then broken ones: truncations and bit flips of every format,
amplification files (an ORA or PNG stack listing one large PNG many times, a PSD of many
large layers), zip bombs, absurd headers (0x0 and 2^31 images, huge canvases, offsets of
10^20), wrong JSON types and deep nesting. Each :class:`Case` says what must happen: a
correct result (``expect="ok"`` with the size and layer count), a clean error
(``"error"``), or either (``"any"``: a mutated file may still be readable).

:func:`run_cases` runs every case through ``lamina.load`` and the commands ``info``,
``view``, ``convert``, ``crop`` and ``metrics`` in a worker subprocess with an address-space
limit (``RLIMIT_AS``), a time limit per operation and a memory cap per operation (peak
resident memory above the worker's baseline, reset before each operation through
``/proc/self/clear_refs``), and classifies each outcome: correct result, clean one-line
error naming the file, traceback, wrong result, over the memory cap, hang, or leftover
(partial) files in the output folder or beside the input.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Operations each case goes through.
OPERATIONS = ("load", "info", "view", "convert", "crop", "metrics")
#: Default limits of :func:`run_cases`.
OP_TIMEOUT_S = 60.0
MEMORY_CAP_BYTES = 1 << 30
ADDRESS_SPACE_EXTRA_BYTES = 4 << 30
#: The budget variable of lamina.io.budget (cleared in workers unless a case sets it).
BUDGET_ENV = "LAMINA_MEMORY_BUDGET"
#: Outcome classes, in the order the report prints them.
OUTCOMES = ("correct", "clean_error", "traceback", "wrong", "unnamed_error", "memory", "hang", "partial")


@dataclasses.dataclass(frozen=True)
class Case:
    """One input file (or PNG-stack folder) and what reading it must give.

    ``expect``: ``"ok"`` (a correct result: ``size`` and ``layers`` must match), ``"error"``
    (a clean one-line error naming the file), or ``"any"`` (either, e.g. a bit flip in pixel data).
    ``env``: extra environment for this case (e.g. a small ``LAMINA_MEMORY_BUDGET``).
    """

    name: str
    path: str
    expect: str = "any"
    size: tuple[int, int] | None = None
    layers: int | None = None
    env: tuple[tuple[str, str], ...] = ()


# ------------------------------------------------------------------ generation
def _base_image(bit_depth: int = 8) -> Any:
    from lamina import Layer, LayeredImage

    rng = np.random.default_rng(0)
    background = Layer(rng.random((16, 24, 3), dtype=np.float32), name="background")
    middle = Layer(rng.random((8, 10, 4), dtype=np.float32), name="fg", offset=(-3, 5), opacity=0.5,
                   blend_mode="multiply", metadata={"caption": "a cat"})
    top = Layer(rng.random((16, 24, 4), dtype=np.float32), name="top", blend_mode="screen", visible=False)
    return LayeredImage(background, [middle, top], metadata={"method": "fuzz"}, bit_depth=bit_depth)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(
    width: int, height: int, *, bit_depth: int = 8, colour_type: int = 6, idat: bytes | None = None
) -> bytes:
    """A PNG with any header (absurd sizes included) and, by default, all-zero pixel rows."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    if idat is None:
        row = 1 + (width * channels * bit_depth + 7) // 8
        compressor = zlib.compressobj(9)
        chunks, zero_row = [], bytes(row)
        for _ in range(height):
            chunks.append(compressor.compress(zero_row))
        idat = b"".join(chunks) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _zip(path: Path, members: Iterable[tuple[str, bytes, int]]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, method in members:
            archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=method)


def _stack_xml(width: Any, height: Any, layers: list[dict[str, str]], inner: str = "") -> bytes:
    items = "".join("<layer " + " ".join(f'{k}="{v}"' for k, v in layer.items()) + "/>" for layer in layers)
    return f'<?xml version="1.0"?><image w="{width}" h="{height}"><stack>{inner}{items}</stack></image>'.encode()


def _ora(path: Path, xml: bytes, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> None:
    _zip(path, [("mimetype", b"image/openraster", zipfile.ZIP_STORED), ("stack.xml", xml, zipfile.ZIP_DEFLATED)]
         + [(name, data, method) for name, data in members.items()])


def _stack(folder: Path, record: Any, files: dict[str, bytes]) -> None:
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "layers.json").write_bytes(record if isinstance(record, bytes) else json.dumps(record).encode())


def _plain_images(root: Path) -> Iterator[Case]:
    from PIL import Image

    rng = np.random.default_rng(1)
    rgba = Image.fromarray((rng.random((12, 20, 4)) * 255).astype(np.uint8), "RGBA")
    variants: dict[str, Any] = {
        "rgba.png": rgba, "rgb.jpg": rgba.convert("RGB"), "cmyk.jpg": rgba.convert("CMYK"),
        "cmyk.tif": rgba.convert("CMYK"), "la.png": rgba.convert("LA"), "l.png": rgba.convert("L"),
        "p.png": rgba.convert("RGB").convert("P"), "bilevel.png": rgba.convert("1"),
        "i16.png": Image.fromarray((rng.random((12, 20)) * 65535).astype(np.uint16)),
        "f.tif": Image.fromarray(rng.random((12, 20)).astype(np.float32), "F"),
        "rgb.gif": rgba.convert("RGB"), "rgb.bmp": rgba.convert("RGB"), "rgba.webp": rgba,
    }
    transparent = rgba.convert("RGB").convert("P")
    transparent.info["transparency"] = 0
    variants["p_transparent.png"] = transparent
    for name, image in variants.items():
        image.save(root / name)
        yield Case(f"mode/{name}", str(root / name), "ok", (20, 12), 0)
    import cv2

    deep = (rng.random((12, 20, 4)) * 65535).astype(np.uint16)
    for name, array in (("rgb16.png", deep[:, :, :3]), ("rgba16.png", deep), ("rgba16.tif", deep)):
        cv2.imwrite(str(root / name), array)
        yield Case(f"mode/{name}", str(root / name), "ok", (20, 12), 0)


#: Sizes of the three levels of :func:`generate_cases`.
LEVELS = ("quick", "fast", "full")


def generate_cases(root: str | os.PathLike[str], *, level: str = "fast", seed: int = 0) -> list[Case]:
    """Write the inputs into ``root`` and return their cases.

    ``level``: ``"quick"`` (a few dozen cases, one of each kind, small amplification files
    under a small budget: the default test run), ``"fast"`` (every kind with a few
    mutations each) or ``"full"`` (many mutations; amplification at the sizes of issue 23
    under the default budget: 6000x6000 layers, a 1 GiB zip bomb).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    full, quick = level == "full", level == "quick"
    from PIL import Image

    from lamina.io import save

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases: list[Case] = []

    # valid layered files, 8 and 16 bit: the bases of the mutations
    bases: dict[str, Path] = {}
    for depth in (8,) if quick else (8, 16):
        image = _base_image(depth)
        for name in ("base.psd", "base.ora", "base_stack"):
            path = save(image, root / f"{depth}_{name}")
            bases[path.name] = path
            cases.append(Case(f"valid/{path.name}", str(path), "ok", (24, 16), 2))
    plain = list(_plain_images(root))
    keep = ("mode/cmyk.jpg", "mode/i16.png", "mode/bilevel.png", "mode/la.png", "mode/rgba16.png")
    cases += [case for case in plain if not quick or case.name in keep]

    # truncations and bit flips of every format
    files = [bases["8_base.psd"], bases["8_base.ora"], root / "rgba.png"]
    if not quick:
        files += [bases["16_base.psd"], root / "rgb.jpg", root / "rgba16.tif", root / "cmyk.tif", root / "rgb.gif",
                  root / "rgba.webp"]
    cuts = (0.0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99) if full else (0.1,) if quick else (0.1, 0.6)
    flips = 20 if full else 1 if quick else 2
    for source in files:
        data = source.read_bytes()
        for fraction in cuts:
            path = root / f"trunc{int(fraction * 100):02d}_{source.name}"
            path.write_bytes(data[:int(len(data) * fraction)])
            cases.append(Case(f"truncate/{path.name}", str(path)))
        for k in range(flips):
            mutated = bytearray(data)
            for position in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                mutated[position] ^= 1 << int(rng.integers(0, 8))
            path = root / f"flip{k:02d}_{source.name}"
            path.write_bytes(bytes(mutated))
            cases.append(Case(f"bitflip/{path.name}", str(path)))
    # PNG stack: truncated / flipped layers.json and layer PNG
    stack = bases["8_base_stack"]
    for k, (member, cut) in enumerate([("layers.json", 0.5), ("01_fg.png", 0.5)] + ([("layers.json", 0.9),
                                       ("00_background.png", 0.1)] if full else [])):
        folder = root / f"trunc_stack{k}"
        shutil.copytree(stack, folder)
        data = (folder / member).read_bytes()
        (folder / member).write_bytes(data[:int(len(data) * cut)])
        cases.append(Case(f"truncate/{folder.name}", str(folder)))
    for k in range(6 if full else 0 if quick else 2):
        folder = root / f"flip_stack{k}"
        shutil.copytree(stack, folder)
        member = folder / ("layers.json" if k % 2 == 0 else "01_fg.png")
        data = bytearray(member.read_bytes())
        for position in rng.integers(0, len(data), size=3):
            data[position] ^= 1 << int(rng.integers(0, 8))
        member.write_bytes(bytes(data))
        cases.append(Case(f"bitflip/{folder.name}", str(folder)))

    more = _headers(root) + _json_cases(root, stack) + _ora_cases(root, bases["8_base.ora"])
    quick_names = ("header/zero.png", "header/huge.png", "header/header_canvas.psd", "json/metadata_list",
                   "json/deep_arrays", "json/offset_1e20", "json/name_dict", "ora/corrupt_deflate",
                   "ora/offset_1e20", "ora/nested_stacks", "ora/billion_laughs")
    cases += [case for case in more if not quick or case.name in quick_names]
    cases += _amplification(root, level)
    empty = root / "empty.png"
    empty.write_bytes(b"")
    cases.append(Case("header/empty.png", str(empty), "error"))
    Image.new("RGB", (1, 1)).save(root / "one.png")
    cases.append(Case("mode/one_pixel.png", str(root / "one.png"), "ok", (1, 1), 0))
    return cases


def _headers(root: Path) -> list[Case]:
    cases = []
    for name, data in {
        "zero.png": png_bytes(0, 0), "zero_width.png": png_bytes(0, 10),
        "huge.png": png_bytes(2**31 - 1, 2**31 - 1, idat=b""),
        "wide.png": png_bytes(300_000, 1, idat=b""), "bomb_header.png": png_bytes(20_000, 20_000, idat=b""),
        "bad_depth.png": png_bytes(4, 4, bit_depth=7, idat=b""),
    }.items():
        (root / name).write_bytes(data)
        cases.append(Case(f"header/{name}", str(root / name), "error"))
    psd = (root / "8_base.psd").read_bytes()
    for name, offset, value in (("canvas", 14, struct.pack(">II", 300_000, 300_000)),
                                ("depth", 22, struct.pack(">H", 7)), ("channels", 12, struct.pack(">H", 99)),
                                ("mode", 24, struct.pack(">H", 42))):
        path = root / f"header_{name}.psd"
        path.write_bytes(psd[:offset] + value + psd[offset + len(value):])
        cases.append(Case(f"header/{path.name}", str(path), "error" if name != "mode" else "any"))
    return cases


def _json_cases(root: Path, stack: Path) -> list[Case]:
    record = json.loads((stack / "layers.json").read_text())
    files = {p.name: p.read_bytes() for p in stack.iterdir() if p.suffix == ".png"}
    deep_text = "[" * 200_000 + "]" * 200_000

    def edit(change: Any) -> Any:
        new = json.loads(json.dumps(record))
        change(new)
        return new

    variants: dict[str, Any] = {
        "metadata_list": edit(lambda r: r.__setitem__("metadata", [1, 2])),
        "layer_metadata_list": edit(lambda r: r["layers"][1].__setitem__("metadata", [1, 2])),
        "layers_string": edit(lambda r: r.__setitem__("layers", "x")),
        "layers_numbers": edit(lambda r: r.__setitem__("layers", [1, 2])),
        "layers_empty": edit(lambda r: r.__setitem__("layers", [])),
        "offset_1e20": edit(lambda r: r["layers"][1].__setitem__("offset", [10**20, 0])),
        "offset_float": edit(lambda r: r["layers"][1].__setitem__("offset", [1.5, 0])),
        "offset_string": edit(lambda r: r["layers"][1].__setitem__("offset", "ab")),
        "offset_short": edit(lambda r: r["layers"][1].__setitem__("offset", [1])),
        "opacity_string": edit(lambda r: r["layers"][1].__setitem__("opacity", "high")),
        "opacity_5": edit(lambda r: r["layers"][1].__setitem__("opacity", 5)),
        "name_dict": edit(lambda r: r["layers"][1].__setitem__("name", {"a": 1})),
        "blend_overlay": edit(lambda r: r["layers"][1].__setitem__("blend_mode", "overlay")),
        "blend_number": edit(lambda r: r["layers"][1].__setitem__("blend_mode", 3)),
        "file_escape": edit(lambda r: r["layers"][1].__setitem__("file", "../../etc/passwd")),
        "file_missing": edit(lambda r: r["layers"][1].__setitem__("file", "nope.png")),
        "file_number": edit(lambda r: r["layers"][1].__setitem__("file", 7)),
        "width_1e20": edit(lambda r: r.__setitem__("width", 10**20)),
        "width_negative": edit(lambda r: r.__setitem__("width", -5)),
        "width_string": edit(lambda r: r.__setitem__("width", "24")),
        "width_bool": edit(lambda r: r.__setitem__("width", True)),
        "canvas_huge": edit(lambda r: r.update(width=300_000, height=300_000)),
        "version_2": edit(lambda r: r.__setitem__("version", 2)),
        "bit_depth_12": edit(lambda r: r.__setitem__("bit_depth", 12)),
        "top_list": [1, 2, 3],
        "deep_arrays": deep_text.encode(),
        "deep_metadata": ('{"layers": [], "metadata": {"a": ' + deep_text + "}}").encode(),
        "not_utf8": b"\xff\xfe\x00garbage",
        "nan": json.dumps(record).replace('"opacity": 0.5', '"opacity": NaN').encode(),
    }
    cases = []
    for name, value in variants.items():
        folder = root / f"json_{name}"
        _stack(folder, value, files)
        cases.append(Case(f"json/{name}", str(folder), "error"))
    return cases


def _ora_cases(root: Path, ora: Path) -> list[Case]:
    with zipfile.ZipFile(ora) as archive:
        members = {n: archive.read(n) for n in archive.namelist() if n not in ("mimetype", "stack.xml")}
    png = members["data/00_background.png"]
    layer = {"src": "data/00_background.png", "name": "bg"}
    cases = []

    def add(name: str, xml: bytes, extra: dict[str, bytes] | None = None, expect: str = "error",
            method: int = zipfile.ZIP_STORED) -> None:
        path = root / f"ora_{name}.ora"
        _ora(path, xml, {**members, **(extra or {})}, method)
        cases.append(Case(f"ora/{name}", str(path), expect, (24, 16) if expect == "ok" else None,
                          0 if expect == "ok" else None))

    add("ok_minimal", _stack_xml(24, 16, [layer]), expect="ok")
    add("offset_1e20", _stack_xml(24, 16, [layer, {**layer, "name": "x", "x": "100000000000000000000"}]))
    add("offset_float", _stack_xml(24, 16, [layer, {**layer, "name": "x", "x": "1.5"}]))
    add("opacity_nan", _stack_xml(24, 16, [{**layer, "opacity": "nan"}]))
    add("opacity_2", _stack_xml(24, 16, [{**layer, "opacity": "2"}]))
    add("size_1e20", _stack_xml("100000000000000000000", 16, [layer]))
    add("size_negative", _stack_xml(-24, 16, [layer]))
    add("size_text", _stack_xml("abc", 16, [layer]))
    add("no_layers", _stack_xml(24, 16, []))
    add("src_missing", _stack_xml(24, 16, [{"name": "x"}]))
    add("src_escape", _stack_xml(24, 16, [{"name": "x", "src": "../../etc/passwd"}]))
    add("src_not_image", _stack_xml(24, 16, [{"name": "x", "src": "lamina.json"}]))
    add("nested_stacks", _stack_xml(24, 16, [layer], inner="<stack>" * 20_000 + "</stack>" * 20_000), expect="any")
    add("not_xml", b"<image w='1' h='1'><stack>")
    laughs = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
              + b"".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9))
              + b']><image w="24" h="16" name="&j;"><stack/></image>')
    add("billion_laughs", laughs)
    add("png_text_as_layer", _stack_xml(24, 16, [layer, {"name": "x", "src": "data/x.png"}]),
        {"data/x.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100})
    # a corrupt deflate stream inside the archive (the layer members deflated, then one byte broken)
    path = root / "ora_corrupt_deflate.ora"
    _ora(path, _stack_xml(24, 16, [layer]), members, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    start = data.find(b"data/00_background.png") + len("data/00_background.png")
    for position in range(start + 40, start + 60):
        data[position] ^= 0x55
    path.write_bytes(bytes(data))
    cases.append(Case("ora/corrupt_deflate", str(path), "error"))
    # a corrupt zlib stream inside the layer PNG (IDAT)
    broken = bytearray(png)
    idat = broken.find(b"IDAT") + 8
    broken[idat:idat + 8] = b"\xff" * 8
    add("corrupt_idat", _stack_xml(24, 16, [layer]), {"data/00_background.png": bytes(broken)}, expect="any")
    return cases


def _amplification(root: Path, level: str) -> list[Case]:
    """Files far smaller than what they decode to: one PNG listed many times, bombs, many large layers.

    ``full`` uses the sizes of issue 23 under the default budget; smaller levels scale them
    down under a budget scaled down as much.
    """
    full = level == "full"
    side = {"full": 6000, "fast": 1500, "quick": 500}[level]
    env = () if full else (("LAMINA_MEMORY_BUDGET", {"fast": "64M", "quick": "8M"}[level]),)
    big = png_bytes(side, side, bit_depth=1, colour_type=0)  # a real, decodable 1-bit PNG of a few KB
    layers = [{"src": "data/big.png", "name": f"l{i}"} for i in range(12)]
    cases = []
    path = root / "amp_ora_same_png.ora"
    _ora(path, _stack_xml(side, side, layers), {"data/big.png": big})
    cases.append(Case("amplification/ora_same_png_x12", str(path), "error", env=env))
    folder = root / "amp_stack_same_png"
    record = {"format": "lamina-layers", "version": 1, "width": side, "height": side,
              "layers": [{"name": f"l{i}", "file": "big.png"} for i in range(12)]}
    _stack(folder, record, {"big.png": big})
    cases.append(Case("amplification/stack_same_png_x12", str(folder), "error", env=env))
    # zip bomb: a member of zeros that deflates ~1000:1, listed as a layer
    bomb_size = {"full": 1 << 30, "fast": 64 << 20, "quick": 16 << 20}[level]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    deflated = b"".join(compressor.compress(chunk) for _ in range(bomb_size >> 20)) + compressor.flush()
    path = root / "amp_zip_bomb.ora"
    _ora(path, _stack_xml(24, 16, [{"src": "data/bomb.png", "name": "bomb"}]), {"data/bomb.png": b""})
    _replace_member(path, "data/bomb.png", deflated, bomb_size)
    cases.append(Case("amplification/ora_zip_bomb", str(path), "error"))
    path = root / "amp_xml_bomb.ora"
    _ora(path, b"", {})
    _replace_member(path, "stack.xml", deflated, bomb_size)
    cases.append(Case("amplification/ora_stack_xml_bomb", str(path), "error"))
    # a PNG whose IDAT inflates far past its declared rows
    path = root / "amp_png_long_idat.png"
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
    path.write_bytes(png_bytes(16, 16, idat=idat))
    cases.append(Case("amplification/png_long_idat", str(path), "any"))
    # a PSD of several large layers, written with psd-tools directly (no float copies of them here)
    from psd_tools import PSDImage

    psd = PSDImage.new("RGBA", (side, side))
    zeros = np.zeros((side, side, 4), np.uint8)
    for i in range(6):
        psd.create_pixel_layer_from_array(zeros, name=f"l{i}")
    del zeros
    path = root / "amp_psd_layers.psd"
    psd._updated = False  # keep the blank merged preview: psd-tools' re-render would cost gigabytes here
    psd.save(path)
    del psd
    cases.append(Case(f"amplification/psd_6x{side}", str(path), "error", env=env))
    return cases


def _replace_member(path: Path, name: str, deflated: bytes, size: int) -> None:
    """Rewrite ``path`` with member ``name`` holding raw ``deflated`` data that inflates to ``size`` zero bytes."""
    crc = 0
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        crc = zlib.crc32(chunk, crc)
    with zipfile.ZipFile(path) as archive:
        others = [(i, archive.read(i)) for i in archive.infolist() if i.filename != name]
    out = io.BytesIO()
    central = []
    for info, data in others + [(None, None)]:
        offset = out.tell()
        if info is None:
            fname, body, method, crc_, raw_size = name.encode(), deflated, 8, crc, size
        else:
            fname, body, method = info.filename.encode(), data, 0
            crc_, raw_size = zlib.crc32(data), len(data)
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc_, len(body), raw_size,
                              len(fname), 0) + fname + body)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc_, len(body),
                                   raw_size, len(fname), 0, 0, 0, 0, 0, offset) + fname)
    start = out.tell()
    for record in central:
        out.write(record)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    path.write_bytes(out.getvalue())


# ------------------------------------------------------------------ running
def _peak_reset() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass


def _peak_rss() -> int:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _Hang(BaseException):
    pass


def kind_ok(detail: str) -> bool:
    """True for a "wrong" outcome that is a success (a file read that had to be refused)."""
    return detail.startswith(("read although", "got size"))


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _operation(op: str, source: Path, out: Path) -> tuple[str, str, Any]:
    """Run one operation; ``(kind, message, value)``: kind ``ok``, ``lamina_error`` or ``exception``."""
    from click.testing import CliRunner

    import lamina
    from lamina.cli import main

    if op == "load":
        load = getattr(lamina, "load", None) or importlib.import_module("lamina.io").load  # older lamina: io.load
        try:
            return "ok", "", load(source)
        except lamina.LaminaError as exc:
            return "lamina_error", str(exc), None
    args = {"info": ["info", source], "view": ["view", source, "--out", out / "sheet.png"],
            "convert": ["convert", source, out / "converted.ora"],
            "crop": ["crop", source, out / "cropped.psd", "--box", "0,0,1,1"],
            "metrics": ["metrics", source, source]}[op]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if isinstance(result.exception, (_Hang, MemoryError)):
        raise result.exception
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        return "exception", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", None
    if result.exit_code == 0:
        return "ok", result.output, None
    return "lamina_error", result.output, None


def _classify(case: Case, op: str, kind: str, message: str, value: Any) -> tuple[str, str]:
    name = Path(case.path).name
    if kind == "exception":
        return "traceback", message
    if kind == "lamina_error":
        lines = [line for line in message.splitlines() if line.strip()]
        if op != "load" and (len(lines) != 1 or not lines[0].startswith("error: ")):
            return "traceback", message[-300:]
        if name not in message:
            return "unnamed_error", message.strip()[:300]
        wrong = case.expect == "ok" and op != "metrics"
        return ("wrong" if wrong else "clean_error"), message.strip()[:300]
    if case.expect == "error":
        return "wrong", "read although it must be refused"
    if op == "load" and case.expect == "ok":
        got = (value.size, len(value.layers))
        if got != (tuple(case.size or ()), case.layers):
            return "wrong", f"got size {value.size} with {len(value.layers)} layers"
        value.validate()
    return "correct", ""


def worker(cases_file: str, op_timeout: float, memory_cap: int) -> None:
    """Worker loop (run in a subprocess by :func:`run_cases`): one JSON line per operation on stdout."""
    import lamina.cli  # noqa: F401 -- import everything before the baseline is taken
    import lamina.io  # noqa: F401

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Hang

    signal.signal(signal.SIGALRM, on_alarm)
    cases = [Case(**{**c, "size": tuple(c["size"]) if c["size"] else None, "env": tuple(map(tuple, c["env"]))})
             for c in json.loads(Path(cases_file).read_text())]
    for index, case in enumerate(cases):
        print(json.dumps({"start": index}), flush=True)
        source = Path(case.path)
        parent = source.parent
        before = _listing(parent) if parent.is_dir() else []
        saved = {k: os.environ.get(k) for k, _ in case.env}
        os.environ.update(dict(case.env))
        for op in OPERATIONS:
            out = Path(tempfile.mkdtemp(prefix="lamina-fuzz-out-"))
            baseline = _rss()
            _peak_reset()
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, op_timeout)
            try:
                kind, message, value = _operation(op, source, out)
                outcome, detail = _classify(case, op, kind, message, value)
                value = None
            except _Hang:
                outcome, detail = "hang", f"over {op_timeout:.0f} s"
            except MemoryError:
                outcome, detail = "memory", "MemoryError (address-space limit)"
            except Exception as exc:  # noqa: BLE001 -- a traceback is what is being counted
                outcome, detail = "traceback", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            seconds = time.perf_counter() - start
            peak = max(0, _peak_rss() - baseline)
            if peak > memory_cap and outcome not in ("hang", "traceback"):
                outcome, detail = "memory", f"peak {peak / 2**20:.0f} MB above baseline"
            left = _listing(out)
            expected = {"view": ["sheet.png"], "convert": ["converted.ora"], "crop": ["cropped.psd"]}.get(op, [])
            succeeded = outcome == "correct" or (outcome == "wrong" and kind_ok(detail))
            leftovers = [p for p in left if p not in expected] if succeeded else left
            if leftovers or (parent.is_dir() and _listing(parent) != before):
                outcome, detail = "partial", f"left {(leftovers or ['files beside the input'])[:3]}"
            shutil.rmtree(out, ignore_errors=True)
            print(json.dumps({"case": index, "op": op, "outcome": outcome, "detail": detail,
                              "seconds": round(seconds, 3), "peak_mb": round(peak / 2**20, 1)}), flush=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _limit_address_space(extra: int) -> Any:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (extra, extra))
    return apply


def run_cases(
    cases: list[Case],
    *,
    op_timeout: float = OP_TIMEOUT_S,
    memory_cap: int = MEMORY_CAP_BYTES,
    address_space: int = ADDRESS_SPACE_EXTRA_BYTES + (3 << 30),
    case_timeout: float | None = None,
    lamina_src: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Run ``cases`` through every operation in worker subprocesses; one record per (case, operation).

    ``lamina_src``: the ``src`` folder of the lamina to test (default: the one this module
    belongs to), e.g. an older checkout for a baseline.

    A worker that stops answering for ``case_timeout`` seconds (default: every operation's
    timeout plus a minute) is killed, its case counted as a hang and a new worker continues
    with the next case.
    """
    case_timeout = case_timeout or op_timeout * len(OPERATIONS) + 60
    records: list[dict[str, Any]] = []
    pending = list(range(len(cases)))
    src = str(lamina_src or Path(__file__).resolve().parents[2])
    env = {**os.environ, "LAMINA_PROGRESS": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    env.pop(BUDGET_ENV, None)
    here = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="lamina-fuzz-") as tmp:
        while pending:
            cases_file = Path(tmp) / "cases.json"
            subset = [cases[i] for i in pending]
            cases_file.write_text(json.dumps([dataclasses.asdict(c) for c in subset]))
            process = subprocess.Popen(
                [sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r}); import fuzz; "
                 f"fuzz.worker(sys.argv[1], {op_timeout!r}, {memory_cap!r})", str(cases_file)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                preexec_fn=_limit_address_space(address_space))
            current, done = None, set()
            assert process.stdout is not None
            deadline = time.monotonic() + case_timeout + 120  # the first case also pays the imports
            while True:
                ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:  # no answer: a hang in C code, or a dead-locked worker
                    process.kill()
                    process.wait()
                    if current is not None:
                        _missing(records, cases, pending[current], done, "hang", f"no answer in {case_timeout:.0f} s")
                    break
                line = process.stdout.readline()
                if not line:
                    process.wait()
                    if current is not None:
                        _missing(records, cases, pending[current], done, "traceback",
                                 f"worker died (exit status {process.returncode})")
                    break
                message = json.loads(line)
                if "start" in message:
                    current, done = message["start"], set()
                    deadline = time.monotonic() + case_timeout
                    continue
                done.add(message["op"])
                records.append({**message, "case": cases[pending[message["case"]]].name,
                                "case_index": pending[message["case"]]})
            finished = current + 1 if current is not None else len(pending)
            pending = pending[finished:]
    return records


def _missing(records: list[dict[str, Any]], cases: list[Case], index: int, done: set[str], outcome: str,
             detail: str) -> None:
    for op in OPERATIONS:
        if op not in done:
            records.append({"case": cases[index].name, "case_index": index, "op": op, "outcome": outcome,
                            "detail": detail, "seconds": None, "peak_mb": None})


def summarise(cases: list[Case], records: list[dict[str, Any]]) -> dict[str, int]:
    """Counts over all (case, operation) records: ``files`` plus one entry per outcome class."""
    counts = Counter(record["outcome"] for record in records)
    return {"files": len(cases), "operations": len(records), **{key: counts.get(key, 0) for key in OUTCOMES}}
