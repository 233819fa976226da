"""Locations: local helpers, and s3:// reads against a real SeaweedFS server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ionmap
from ionmap import _files
from ionmap.errors import MissingIbdError, StorageError
from ionmap.imzml import _cache as cache
from ionmap.imzml import _opener as opener

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def test_url_helpers(tmp_path):
    assert _files.is_url("s3://bucket/a.imzML") and _files.is_url("gcs://b/k")
    assert not _files.is_url("/data/a.imzML") and not _files.is_url("C:\\data\\a.imzML")
    assert not _files.is_url("file:///data/a.imzML") and not _files.is_url(tmp_path)
    assert _files.local_path("file:///data/a.imzML") == "/data/a.imzML"
    assert _files.local_path("s3://b/k") is None
    assert _files.parent("s3://b/dir/a.imzML") == "s3://b/dir"
    assert _files.basename("s3://b/dir/a.imzML") == "a.imzML"
    assert _files.join("s3://b/dir/", "a.ibd") == "s3://b/dir/a.ibd"
    assert _files.join(str(tmp_path), "a.ibd") == str(tmp_path / "a.ibd")
    (tmp_path / "x.bin").write_bytes(b"0123456789")
    st = _files.stat(str(tmp_path / "x.bin"))
    assert st.size == 10 and st.mtime_ns == os.stat(tmp_path / "x.bin").st_mtime_ns
    assert _files.stat(str(tmp_path / "missing")) is None
    assert _files.stat(str(tmp_path)) is None  # a directory is not a file
    assert _files.listdir(str(tmp_path)) == ["x.bin"]


def test_parse_storage_options():
    got = _files.parse_storage_options(
        ["endpoint_url=http://127.0.0.1:9000", "anon=true", "max_concurrency=4",
         'client_kwargs={"region_name": "eu-west-1"}', "key=a=b"])
    assert got == {"endpoint_url": "http://127.0.0.1:9000", "anon": True, "max_concurrency": 4,
                   "client_kwargs": {"region_name": "eu-west-1"}, "key": "a=b"}
    with pytest.raises(StorageError, match="KEY=VALUE"):
        _files.parse_storage_options(["novalue"])


def test_local_range_reader(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4)
    reader = _files.RangeReader(str(path))
    buf = np.zeros(32, np.uint8)
    reader.read_into(buf, np.array([10, 1000]), np.array([4, 8]), np.array([0, 16]))
    assert bytes(buf[:4]) == bytes(range(10, 14)) and bytes(buf[16:24]) == bytes(range(232, 240))
    assert reader.read(1020, 100) == bytes(range(252, 256))  # short only at the end
    with pytest.raises(StorageError, match="unexpected end of file"):
        reader.read_into(buf, np.array([1020]), np.array([8]), np.array([0]))
    reader.close()


# ---- S3 (SeaweedFS) -----------------------------------------------------------------------
def comparable(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in ("file", "ibd")}


def assert_same_reading(remote, local) -> None:
    assert comparable(remote.summary()) == comparable(local.summary())
    np.testing.assert_array_equal(remote.coordinates, local.coordinates)
    a = remote.read_batch(np.arange(remote.n_spectra))
    b = local.read_batch(np.arange(local.n_spectra))
    for name in ("offsets", "mz", "mz_starts", "intensity"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for i in range(remote.n_spectra):
        for x, y in zip(remote.spectrum(i), local.spectrum(i)):
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype


def upload(s3, bucket: str, imzml: Path, ibd_name: str | None = None) -> str:
    url = f"s3://{bucket}/{imzml.name}"
    s3.put(imzml, url)
    ibd = imzml.with_suffix(".ibd") if imzml.with_suffix(".ibd").exists() else next(
        p for p in imzml.parent.iterdir()
        if p.stem == imzml.stem and p.suffix.lower() == ".ibd")
    s3.put(ibd, f"s3://{bucket}/{ibd_name or ibd.name}")
    return url


@pytest.mark.parametrize("mode", ["processed", "continuous"])
def test_s3_read_equals_local(s3_server, write_imzml, mode):
    w = write_imzml(mode=mode, spectrum_type="profile" if mode == "continuous" else "centroid",
                    shape=(5, 6), seed=21)
    url = upload(s3_server, s3_server.make_bucket(), w.path)
    remote = ionmap.open_imzml(url, s3_server.storage_options, cache=False)
    assert remote.url == url and remote.ibd_url == url[: -len(".imzML")] + ".ibd"
    assert_same_reading(remote, ionmap.open_imzml(w.path, cache=False))
    batches = list(remote.iter_batches(max_bytes=500))
    assert len(batches) > 3
    np.testing.assert_array_equal(np.concatenate([b.index for b in batches]),
                                  np.arange(remote.n_spectra))


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not present")
def test_s3_corpus_file_with_upper_case_ibd(s3_server):
    path = CORPUS / "cardinal" / "Example_Processed.imzML"
    url = upload(s3_server, s3_server.make_bucket(), path, ibd_name="Example_Processed.IBD")
    remote = ionmap.open_imzml(url, s3_server.storage_options, cache=False)
    assert remote.ibd_url.endswith(".IBD")
    assert_same_reading(remote, ionmap.open_imzml(path, cache=False))


def test_s3_missing_ibd_and_bad_credentials(s3_server, write_imzml):
    w = write_imzml()
    bucket = s3_server.make_bucket()
    url = f"s3://{bucket}/run.imzML"
    s3_server.put(w.path, url)
    with pytest.raises(MissingIbdError, match="no binary file run.ibd"):
        ionmap.open_imzml(url, s3_server.storage_options)
    wrong = {**s3_server.storage_options, "secret": "not-the-secret"}
    with pytest.raises(StorageError, match="cannot read"):
        ionmap.open_imzml(url, wrong)


def test_s3_sidecar_in_user_cache(s3_server, write_imzml, monkeypatch):
    w = write_imzml(seed=3)
    url = upload(s3_server, s3_server.make_bucket(), w.path)
    first = ionmap.open_imzml(url, s3_server.storage_options)
    assert os.path.isfile(cache.locations(url)[0])
    monkeypatch.setattr(opener.xml, "parse", None)  # the reopen must not parse
    assert_same_reading(ionmap.open_imzml(url, s3_server.storage_options), first)


def test_cli_info_over_s3(s3_server, write_imzml):
    w = write_imzml(seed=5, polarity="negative")
    url = upload(s3_server, s3_server.make_bucket(), w.path)
    options = [f"--storage-option={k}={v}" for k, v in s3_server.storage_options.items()]
    out = subprocess.run([sys.executable, "-m", "ionmap.cli", "info", url, "--json", *options],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["file"] == url and info["polarity"] == "negative"
    assert comparable(info) == comparable(ionmap.open_imzml(w.path, cache=False).summary())
    env = {**os.environ, **s3_server.env}  # credentials and endpoint from AWS_* variables
    out = subprocess.run([sys.executable, "-m", "ionmap.cli", "info", url], env=env,
                         capture_output=True, text=True, check=True)
    assert "processed" in out.stdout and "negative" in out.stdout


def test_write_atomic_whole_or_nothing(tmp_path):
    """The one atomic-write helper: content or a path-writer, the folder made, readable by
    all, and on failure a StorageError naming the file with no temporary file left."""
    from ionmap.errors import StorageError

    target = tmp_path / "new" / "a.txt"
    assert _files.write_atomic(target, "µm") == target and target.read_text("utf-8") == "µm"
    assert target.stat().st_mode & 0o777 == 0o644
    _files.write_atomic(target, lambda p: p.write_bytes(b"\x00\x01"))
    assert target.read_bytes() == b"\x00\x01"

    def fail(p):
        p.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(StorageError, match="a.txt: cannot write: No space left"):
        _files.write_atomic(target, fail)
    assert target.read_bytes() == b"\x00\x01" and sorted(target.parent.iterdir()) == [target]
