"""The error classes fit Python's builtins and survive pickling (Dask workers)."""
from __future__ import annotations

import pickle

import pytest

import ionmap
from ionmap import errors


def test_hierarchy_matches_the_builtins():
    assert issubclass(errors.InputError, ValueError)
    assert issubclass(errors.StorageError, OSError)
    assert issubclass(errors.MissingIbdError, FileNotFoundError)
    for cls in (errors.InputError, errors.StorageError, errors.MissingIbdError):
        assert issubclass(cls, errors.IonmapError)


@pytest.mark.parametrize("cls", [errors.InputError, errors.StorageError,
                                 errors.MissingIbdError, errors.TruncatedIbdError])
def test_message_and_pickling(cls):
    exc = cls("s3://b/x.imzML", "the problem")
    assert str(exc) == "s3://b/x.imzML: the problem"  # never OSError's "[Errno ...]" form
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and str(back) == str(exc) and back.path == exc.path
    assert str(cls(None, "only this")) == "only this"


def test_missing_ibd_is_a_file_not_found(tmp_path):
    path = tmp_path / "lonely.imzML"
    path.write_text("<?xml version='1.0'?><mzML></mzML>")
    with pytest.raises(FileNotFoundError, match="lonely"):
        ionmap.open_imzml(path)


def test_storage_and_argument_errors_are_builtin_kinds(tmp_path):
    with pytest.raises(OSError, match="no ionmap result"):
        ionmap.open_result(tmp_path / "nothing.zarr")
    with pytest.raises(ValueError, match="unknown element"):
        ionmap.chem.mz("C3Xy", "[M-H]-")
    with pytest.raises(ValueError, match="ppm"):
        ionmap.convert(tmp_path / "a.imzML", tmp_path / "b.zarr", ppm="ten")
    import numpy as np

    from ionmap.kernels import pick_peaks
    with pytest.raises(errors.InputError, match="snr"):
        pick_peaks(np.arange(3.0), np.ones(3), snr=-1)
