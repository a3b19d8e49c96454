"""Load check of ``lamina studio``: concurrent browser sessions decomposing photos, against direct Python calls.

Starts ``lamina studio`` on 127.0.0.1 (or uses ``--url``), then ``--sessions`` clients at once
(threads, each a ``gradio_client.Client``, i.e. its own browser session) each do ``--rounds``
times what a user does: upload its own 512² photo (a procedural scene; a different seed per
session and round), set the object's box, take it apart (the built-in learned model unless
``--method classical``), download the flattened PNG. Everything is bounded: a fixed number of
requests, each with a timeout; the script stops by itself and stops the studio it started.

Reported, beside the baseline (the same decompositions as plain ``decompose_image`` calls, one
after another in this process, model loaded once):

* seconds per decomposition request as the client sees it (queueing included): mean, median, max;
* seconds per decomposition of the server's own work (wall time of all requests / count);
* peak resident memory of the studio process (``VmHWM``) and of this process's baseline;
* requests lost (no answer, an error, or a timeout) -- must be 0;
* sessions that got another session's image back -- must be 0: each download is compared with
  every session's photo and must be nearest to its own.

    python benchmarks/bench_studio.py [--sessions 8] [--rounds 1] [--size 512] [--method layeringdiff]
                                      [--concurrency 1] [--url http://127.0.0.1:7860/]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

#: Seeds of the photos: session s, round r uses FIRST_SEED + 100 * r + s.
FIRST_SEED = 700_000
#: Seconds one request may take before it counts as lost.
REQUEST_TIMEOUT_S = 900
#: Seconds for the studio to start.
START_TIMEOUT_S = 240


@dataclasses.dataclass
class Job:
    session: int
    round: int
    photo: Path
    rgb: np.ndarray
    box: tuple[int, int, int, int]
    seconds: float | None = None
    result: np.ndarray | None = None
    error: str | None = None


def _scenes(sessions: int, rounds: int, size: int, folder: Path) -> list[Job]:
    from lamina.data import SCENE_PRESETS, generate_scene

    config = dataclasses.replace(SCENE_PRESETS["default"], size=size)
    jobs = []
    for r in range(rounds):
        for s in range(sessions):
            scene = generate_scene(FIRST_SEED + 100 * r + s, config)
            path = folder / f"photo_s{s}_r{r}.png"
            rgb8 = (scene.composite * 255).round().astype(np.uint8)
            Image.fromarray(rgb8).save(path)
            jobs.append(Job(s, r, path, rgb8.astype(np.float32) / 255, tuple(int(v) for v in scene.box)))
    return jobs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_studio(concurrency: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-c", "from lamina.cli import main; main()", "studio", "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--concurrency", str(concurrency)]
    env = {**os.environ, "LAMINA_PROGRESS": "0"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"lamina studio exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return process, url
        except OSError:
            time.sleep(1.0)
    process.kill()
    raise SystemExit(f"lamina studio did not start within {START_TIMEOUT_S} s")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _session(url: str, jobs: list[Job], method: str) -> None:
    """One browser session: its jobs one after another, as one user would."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    for job in jobs:
        try:
            client.predict(handle_file(str(job.photo)), api_name="/load_photo")
            client.predict(",".join(str(v) for v in job.box), api_name="/set_boxes")
            start = time.perf_counter()
            client.submit(method, "", 1, api_name="/decompose").result(timeout=REQUEST_TIMEOUT_S)
            job.seconds = time.perf_counter() - start
            path = client.predict("png", api_name="/export")[0]
            job.result = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        except Exception as exc:  # noqa: BLE001 - a lost request is a result to report
            job.error = f"{type(exc).__name__}: {exc}"[:200]


def _baseline(jobs: list[Job], method: str) -> tuple[list[float], float]:
    from lamina.layeringdiff import decompose_image, make_decomposer

    decomposer = make_decomposer(method)
    seconds = []
    for job in jobs:
        start = time.perf_counter()
        decompose_image(job.rgb, box=job.box, decomposer=decomposer)
        seconds.append(time.perf_counter() - start)
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _crossed(jobs: list[Job]) -> int:
    """Downloads nearer to another job's photo than to their own (a session seeing another's image)."""
    done = [j for j in jobs if j.result is not None]
    bad = 0
    for job in done:
        distances = [float(np.abs(job.result - other.rgb).mean()) for other in jobs]
        if int(np.argmin(distances)) != jobs.index(job):
            bad += 1
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--method", default="layeringdiff", choices=("layeringdiff", "classical"))
    parser.add_argument("--concurrency", type=int, default=1, help="the studio's --concurrency (model calls at once)")
    parser.add_argument("--url", default=None, help="a running studio instead of starting one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-studio-") as tmp:
        folder = Path(tmp)
        jobs = _scenes(args.sessions, args.rounds, args.size, folder)
        process = None
        if args.url is None:
            process, url = _start_studio(args.concurrency, folder / "studio.log")
        else:
            url = args.url
        try:
            threads = [threading.Thread(target=_session, args=(url, [j for j in jobs if j.session == s], args.method))
                       for s in range(args.sessions)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            server_peak = _peak_rss_mb(process.pid) if process is not None else float("nan")
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        base_seconds, base_peak = _baseline(jobs, args.method)

    served = [j.seconds for j in jobs if j.seconds is not None and j.error is None]
    lost = [j for j in jobs if j.error is not None or j.result is None]
    print(f"{len(jobs)} decompositions of {args.size}² photos ({args.method}), {args.sessions} sessions at once x "
          f"{args.rounds} round(s), studio --concurrency {args.concurrency}, OMP_NUM_THREADS="
          f"{os.environ['OMP_NUM_THREADS']}\n")
    print("| run | s per request: mean | median | max | s of work per photo | peak RSS MB | lost | wrong image |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| direct decompose_image, one after another (baseline) | {statistics.mean(base_seconds):.2f} | "
          f"{statistics.median(base_seconds):.2f} | {max(base_seconds):.2f} | {sum(base_seconds) / len(jobs):.2f} | "
          f"{base_peak:.0f} | – | – |")
    if served:
        print(f"| studio, {args.sessions} concurrent sessions (HTTP, queued) | {statistics.mean(served):.2f} | "
              f"{statistics.median(served):.2f} | {max(served):.2f} | {wall / len(jobs):.2f} | {server_peak:.0f} | "
              f"{len(lost)} | {_crossed(jobs)} |")
    for job in lost:
        print(f"lost: session {job.session} round {job.round}: {job.error}")
    print(f"\nwall time of the concurrent run: {wall:.1f} s (uploads, boxes and downloads included)")


if __name__ == "__main__":
    main()
