"""s3:// input and output against a real SeaweedFS server on 127.0.0.1 (conftest s3_server)."""
from __future__ import annotations

import numpy as np
import pytest

import ionmap
from ionmap import store as st
from ionmap.cli import main
from ionmap.errors import StorageError
from ionmap.synth import make_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("s3sample"), "run", seed=5, mode="processed",
                       spectrum_type="profile", shape=(36, 44), rim_um=10.0)


def _same(a, b):
    assert a.shape == b.shape and a.target_names == b.target_names
    np.testing.assert_array_equal(a.ion_images.compute(), b.ion_images.compute())
    np.testing.assert_array_equal(a.tic, b.tic)
    np.testing.assert_array_equal(a.mask, b.mask)
    for level in range(1, a.n_levels):
        np.testing.assert_array_equal(a.ion_level(level).compute(), b.ion_level(level).compute())
    if a.features is not None:
        np.testing.assert_array_equal(a.features_mz, b.features_mz)
        np.testing.assert_array_equal(a.features.compute(), b.features.compute())


def test_s3_input_and_output_equal_local(s3_server, sample, tmp_path):
    options = dict(progress=False, band_rows=8, peaks=True, features=True, axis_sample=None,
                   normalize="tic")
    local = ionmap.convert(sample.imzml, tmp_path / "local.zarr", **options)
    bucket = s3_server.make_bucket()
    s3_server.put(sample.imzml, f"s3://{bucket}/data/run.imzML")
    s3_server.put(sample.ibd, f"s3://{bucket}/data/run.ibd")
    so = s3_server.storage_options
    # s3 -> s3
    out = f"s3://{bucket}/results/run.zarr"
    remote = ionmap.convert(f"s3://{bucket}/data/run.imzML", out, storage_options=so,
                            **options)
    _same(remote, local)
    reopened = ionmap.open_result(out, storage_options=so)
    assert reopened.complete and reopened.url == out
    _same(reopened, local)
    # the scratch space of the normalisation is gone and the object count stays small
    keys = s3_server.filesystem().find(f"{bucket}/results/run.zarr")
    assert not [k for k in keys if f"/{st.WORK}/" in k]
    assert len(keys) < 60, len(keys)
    # s3 -> local and local -> s3
    _same(ionmap.convert(f"s3://{bucket}/data/run.imzML", tmp_path / "down.zarr",
                         storage_options=so, **options), local)
    up = f"s3://{bucket}/results/up.zarr"
    _same(ionmap.convert(sample.imzml, up, output_storage_options=so, **options), local)
    # an existing remote result is protected; labels can be added remotely
    with pytest.raises(StorageError, match="overwrite=True"):
        ionmap.convert(sample.imzml, up, output_storage_options=so, **options)
    labels = (local.ion_image("lactate") > 0).astype(np.int32)
    st.write_labels(up, "hotspots", labels, storage_options=so)
    np.testing.assert_array_equal(ionmap.open_result(up, so).labels("hotspots"), labels)


def test_cli_reads_credentials_from_the_environment(s3_server, sample, monkeypatch, capsys):
    bucket = s3_server.make_bucket()
    s3_server.put(sample.imzml, f"s3://{bucket}/run.imzML")
    s3_server.put(sample.ibd, f"s3://{bucket}/run.ibd")
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    out = f"s3://{bucket}/run.zarr"
    code = main(["convert", f"s3://{bucket}/run.imzML", out, "--quiet",
                 "--storage-option", f"endpoint_url={s3_server.endpoint_url}"])
    assert code == 0, capsys.readouterr().err
    res = ionmap.open_result(out, {"endpoint_url": s3_server.endpoint_url})
    assert res.complete and res.ion_image("lactate").any()


def test_unreachable_output_store_is_a_one_line_error(sample, capsys):
    options = ["--storage-option", "endpoint_url=http://127.0.0.1:9", "--storage-option",
               "key=a", "--storage-option", "secret=b", "--storage-option",
               'config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1}']
    assert main(["convert", str(sample.imzml), "s3://nobucket/x.zarr", "--quiet",
                 *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s3://nobucket/x.zarr" in err[0] and "127.0.0.1:9" in err[0]
