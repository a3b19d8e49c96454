"""The standing reliability suite: malformed inputs through every reading command (issue 23).

Each case runs in a worker subprocess with an address-space limit, a time limit and a
memory cap per operation (see :mod:`lamina.testing.fuzz`). Every operation must end in a
correct result or a clean one-line error naming the file: no traceback, no wrong result,
no hang, nothing over the memory cap and no file left behind. The default run uses the
``quick`` level (a few dozen files); ``pytest -m slow`` runs the ``full`` level.
"""

from __future__ import annotations

import numpy as np
import pytest

from lamina.testing.fuzz import OPERATIONS, generate_cases, run_cases, summarise


@pytest.fixture(scope="module")
def quick_cases(tmp_path_factory: pytest.TempPathFactory) -> list:
    return generate_cases(tmp_path_factory.mktemp("quick"), level="quick")


def _check(cases: list) -> None:
    records = run_cases(cases, op_timeout=120)
    summary = summarise(cases, records)
    bad = [f"{r['case']} {r['op']}: {r['outcome']} ({r['detail'][:200]})" for r in records
           if r["outcome"] not in ("correct", "clean_error")]
    assert not bad, "\n".join(bad)
    assert summary["operations"] == len(cases) * len(OPERATIONS)
    assert summary["correct"] > 0 and summary["clean_error"] > 0
    names = {case.name for case in cases}
    for must in ("amplification/ora_same_png_x12", "amplification/ora_zip_bomb", "json/metadata_list",
                 "ora/corrupt_deflate", "ora/offset_1e20", "json/deep_arrays"):
        assert must in names


def test_reliability_quick(quick_cases) -> None:
    _check(quick_cases)


@pytest.mark.slow
def test_reliability_full(tmp_path) -> None:
    _check(generate_cases(tmp_path, level="full"))


def test_issue_23_files_refused_before_decoding(quick_cases, monkeypatch) -> None:
    """The amplification files are refused by the budget check, naming the budget and how to raise it."""
    import lamina
    from lamina.errors import InputFileError

    cases = {case.name: case for case in quick_cases}
    monkeypatch.setenv("LAMINA_MEMORY_BUDGET", "8M")
    for name in ("amplification/ora_same_png_x12", "amplification/stack_same_png_x12", "amplification/psd_6x500"):
        with pytest.raises(InputFileError, match=r"over the memory budget of 8\.0 MB; set LAMINA_MEMORY_BUDGET"):
            lamina.load(cases[name].path)
    monkeypatch.delenv("LAMINA_MEMORY_BUDGET")
    image = lamina.load(cases["amplification/ora_same_png_x12"].path, memory_budget=1 << 30)
    assert len(image.all_layers) == 12 and image.size == (500, 500)
    with pytest.raises(InputFileError, match=r"data/bomb\.png"):
        lamina.load(cases["amplification/ora_zip_bomb"].path)
    with pytest.raises(InputFileError, match=r"cannot read archive member 'data/00_background\.png'"):
        lamina.load(cases["ora/corrupt_deflate"].path)
    with pytest.raises(InputFileError, match="'metadata' must be an object"):
        lamina.load(cases["json/metadata_list"].path)
    with pytest.raises(InputFileError, match="nested too deeply"):
        lamina.load(cases["json/deep_arrays"].path)
    with pytest.raises(InputFileError, match="out of range"):
        lamina.load(cases["ora/offset_1e20"].path)


def test_run_measured_reports_the_commands_own_peak_not_the_callers():
    """A child forked from a large process starts at that process's size (``ru_maxrss``); run_measured's is the
    command's own: here the caller holds 400 MB and the command allocates 100 MB."""
    import sys

    from lamina.testing.peak import run_measured

    held = np.ones(400 << 17)  # 400 MB of float64, resident
    code = "import numpy as np, sys; a = np.ones(100 << 17); sys.stderr.write('done'); sys.exit(3)"
    run = run_measured([sys.executable, "-c", code])
    assert run.returncode == 3 and run.stderr.endswith("done")
    assert 100 << 20 <= run.peak_bytes < 300 << 20 and run.cpu_seconds > 0 and not run.over_cap
    assert held.sum() > 0
    # A cap stops the command once its resident memory passes it.
    grow = ("import numpy as np, time\nparts = []\n"
            "for _ in range(40):\n    parts.append(np.ones(25 << 17)); time.sleep(0.02)")  # 25 MB a step, to 1 GB
    capped = run_measured([sys.executable, "-c", grow], rss_cap=300 << 20)
    assert capped.over_cap and capped.returncode != 0 and capped.peak_bytes < 600 << 20
