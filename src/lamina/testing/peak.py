"""Peak resident memory and CPU time of a command, measured from a small process.

A child's ``ru_maxrss`` starts at its parent's resident size when it is forked (Linux records the
forked copy's size at ``exec``), so a test or benchmark that made large arrays before starting
the command would read its own size instead of the command's. :func:`run_measured` starts a small
Python launcher that starts the command and reports the command's own peak and CPU time
(``wait4``), and stops it when its resident memory passes a cap.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

#: The launcher: ``argv = [cap_bytes (0: none), command...]``; runs the command (killing it when its resident
#: memory, read from /proc every 50 ms, passes the cap), then prints its peak (KiB), exit status, CPU seconds
#: and whether it was stopped, as its last stderr line.
_LAUNCHER = """\
import os, subprocess, sys, threading, time
cap, done, over = int(sys.argv[1]), threading.Event(), threading.Event()
child = subprocess.Popen(sys.argv[2:])
def watch():
    page = os.sysconf("SC_PAGE_SIZE")
    while not done.wait(0.05):
        try:
            with open(f"/proc/{child.pid}/statm") as f:
                resident = int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            return
        if resident > cap:
            over.set()
            child.kill()
            return
if cap:
    threading.Thread(target=watch, daemon=True).start()
_, status, usage = os.wait4(child.pid, 0)
done.set()
cpu = usage.ru_utime + usage.ru_stime
print(f"lamina-peak-kib {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {cpu} {int(over.is_set())}",
      file=sys.stderr)
"""
_TAG = "lamina-peak-kib "


@dataclass
class MeasuredRun:
    """A finished command: exit status, peak resident bytes and CPU seconds (``None`` when the launcher reported
    nothing), whether it was stopped for passing the memory cap, and its output."""

    returncode: int
    peak_bytes: int | None
    stdout: str
    stderr: str
    cpu_seconds: float | None = None
    over_cap: bool = False


def run_measured(command: list[str], env: dict[str, str] | None = None, timeout: float | None = None,
                 rss_cap: int | None = None) -> MeasuredRun:
    """Run ``command`` to the end and measure its peak resident memory and CPU time (see the module docstring).

    ``rss_cap``: bytes of resident memory at which the command is killed (``over_cap`` then); ``None``: no cap.
    """
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, str(rss_cap or 0), *command], env=env,
                          capture_output=True, text=True, timeout=timeout)
    at = done.stderr.rfind(_TAG)  # the launcher's line comes last, maybe after the command's unfinished one
    if at < 0:
        return MeasuredRun(done.returncode, None, done.stdout, done.stderr)
    kib, code, cpu, over = done.stderr[at + len(_TAG):].split()
    return MeasuredRun(int(code), int(kib) * 1024, done.stdout, done.stderr[:at], float(cpu), over == "1")
