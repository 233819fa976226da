"""Run a job as a whole process and measure it from outside: wall time and peak resident
memory, anonymous and file-backed separately (``RssAnon`` / ``RssFile`` of
``/proc/PID/status``, sampled every 10 ms, so memory-mapped file pages are not mistaken
for heap and are not hidden either). Linux only."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SAMPLE_S = 0.01


def _rss_kb(pid: int) -> tuple[int, int]:
    anon = file = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
                elif line.startswith("RssFile:"):
                    file = int(line.split()[1])
    except OSError:
        pass
    return anon, file


def run_measured(code: str, *args: str, env: dict | None = None, nice: int = 0,
                 python: str = sys.executable, cwd: str | os.PathLike | None = None) -> dict:
    """Run ``python -c code args...`` (``python``: the interpreter, by default this one; a
    peer's virtual environment, say) in ``cwd`` (where a tool's own log files land); the
    job prints one JSON object as its last stdout
    line (its own timings). Returns that object plus ``wall_s``, ``anon_mb``, ``file_mb``
    (peaks over the process's life), or raises RuntimeError with the job's stderr."""
    full_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen([python, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd,
                            preexec_fn=(lambda: os.nice(nice)) if nice else None)
    anon = file = 0
    while proc.poll() is None:
        a, f = _rss_kb(proc.pid)
        anon, file = max(anon, a), max(file, f)
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"job failed ({proc.returncode}): {err.strip()[-2000:]}")
    lines = [line for line in out.splitlines() if line.strip()]
    result = json.loads(lines[-1]) if lines else {}
    result.update(wall_s=wall, anon_mb=anon / 1024, file_mb=file / 1024)
    return result


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table, columns right-aligned."""
    cells = [header, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def centroid_sample(workdir: Path, size: str) -> Path:
    """The synthetic centroid file of ``size`` (e.g. ``"2GB"`` of .ibd) in
    ``workdir/centroid-SIZE/``, written once by ``ionmap synth`` and reused."""
    folder = workdir / f"centroid-{size}"
    imzml = folder / "sample.imzML"
    if not imzml.exists():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "ionmap.cli", "synth", str(folder), "--type",
                        "centroid", "--size", size], check=True, stdout=subprocess.DEVNULL)
    return imzml


def drop_sidecar(imzml: str | Path) -> None:
    """Remove ionmap's metadata sidecar of ``imzml`` (a cold open parses the XML again;
    other tools' caches, if any, are theirs to keep)."""
    from ionmap.imzml import _cache as cache

    for p in cache.locations(str(imzml)):
        Path(p).unlink(missing_ok=True)
