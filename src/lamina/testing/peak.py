"""Peak resident memory of a command, measured from a small process.

A child's ``ru_maxrss`` starts at its parent's resident size when it is forked (Linux records the
forked copy's size at ``exec``), so a test or benchmark that made large arrays before starting
the command would read its own size instead of the command's. :func:`run_measured` starts a small
Python launcher that starts the command and reports the command's own peak (``wait4``).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

#: The launcher: runs argv[1:], then prints the child's peak (KiB) and exit status as its last stderr line.
_LAUNCHER = ("import os, subprocess, sys\n"
             "child = subprocess.Popen(sys.argv[1:])\n"
             "_, status, usage = os.wait4(child.pid, 0)\n"
             "print(f'lamina-peak-kib {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}', file=sys.stderr)\n")
_TAG = "lamina-peak-kib "


@dataclass
class MeasuredRun:
    """A finished command: exit status, peak resident bytes (``None`` when the launcher reported none), output."""

    returncode: int
    peak_bytes: int | None
    stdout: str
    stderr: str


def run_measured(command: list[str], env: dict[str, str] | None = None, timeout: float | None = None) -> MeasuredRun:
    """Run ``command`` to the end and measure its peak resident memory (see the module docstring)."""
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], env=env, capture_output=True, text=True,
                          timeout=timeout)
    at = done.stderr.rfind(_TAG)  # the launcher's line comes last, maybe after the command's unfinished one
    if at < 0:
        return MeasuredRun(done.returncode, None, done.stdout, done.stderr)
    kib, code = done.stderr[at + len(_TAG):].split()
    return MeasuredRun(int(code), int(kib) * 1024, done.stdout, done.stderr[:at])
