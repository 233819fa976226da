"""The command line on a newcomer's mistakes: each is exit code 2 and one line on stderr
naming the file and the problem (no traceback); each legal variant works.

Interruptions (Ctrl-C, SIGTERM) run the real command in a child process on a pseudo
terminal, so the progress bar really hides the cursor and must show it again.
"""
from __future__ import annotations

import functools
import http.server
import os
import pty
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import ionmap
from ionmap.cli import cli_wording, main
from ionmap.errors import InputError, IonmapError

SRC = str(Path(ionmap.__file__).resolve().parents[1])


def one_error_line(capsys) -> str:
    """The single stderr line of a failed command (fails on anything else)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ionmap: error: ")
    return err[0]


@pytest.fixture
def small(write_imzml):
    return write_imzml("run", shape=(3, 4)).path  # m/z 100-900


@pytest.fixture
def inside(tmp_path):
    """Targets inside the small file's m/z range (no warnings)."""
    return targets_csv(tmp_path, """\
        name,mz
        a,300.0
        b,600.0
        """)


def targets_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.csv"
    path.write_text(textwrap.dedent(text))
    return path


# -- inputs ----------------------------------------------------------------------------------


@pytest.fixture
def http_without_ranges(small):
    """A plain http.server (no Range support) on 127.0.0.1 serving the small file's folder."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(small.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{small.name}"
    server.shutdown()
    server.server_close()


def test_server_without_range_support_is_one_line(http_without_ranges, tmp_path, capsys):
    assert main(["info", "--no-cache", http_without_ranges]) == 2
    line = one_error_line(capsys)
    assert http_without_ranges in line and "byte-range" in line
    assert main(["convert", http_without_ranges, str(tmp_path / "o.zarr"), "--quiet"]) == 2
    assert "byte-range" in one_error_line(capsys)


def test_what_is_not_an_imzml_file_says_so(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes\n")
    empty = tmp_path / "empty.imzML"
    empty.write_bytes(b"")
    for path, problem in ((notes, "not an imzML file"), (empty, "not an imzML file"),
                          (tmp_path, "is a folder")):
        assert main(["info", str(path)]) == 2
        line = one_error_line(capsys)
        assert str(path) in line and problem in line and "ibd" not in line


def test_unknown_targets_column_is_an_error(small, tmp_path, capsys):
    csv = targets_csv(tmp_path, """\
        name,mz,gruop
        a,300.0,lipid
        """)
    assert main(["convert", str(small), str(tmp_path / "o.zarr"), "--targets", str(csv),
                 "--quiet"]) == 2
    line = one_error_line(capsys)
    assert str(csv) in line and "'gruop'" in line
    assert not (tmp_path / "o.zarr").exists()
    ok = targets_csv(tmp_path, """\
        name,mz,group,
        a,300.0,lipid,
        """)  # a trailing comma (an empty header) is not a column
    assert main(["convert", str(small), str(tmp_path / "o.zarr"), "--targets", str(ok),
                 "--quiet"]) == 0


def test_all_targets_outside_the_mz_range_are_refused(small, tmp_path, capsys):
    csv = targets_csv(tmp_path, """\
        name,mz
        low,50.0
        high,1500.0
        """)
    assert main(["convert", str(small), str(tmp_path / "o.zarr"), "--targets", str(csv),
                 "--quiet"]) == 2
    line = one_error_line(capsys)
    assert str(small) in line and "outside the file's m/z range" in line


def test_missing_or_unreadable_lock_masses_write_nothing(small, inside, tmp_path, capsys):
    bad = tmp_path / "locks.csv"
    bad.write_text("name,weight\nx,3\n")
    for locks, problem in ((tmp_path / "no-such-locks.csv", "cannot read lock masses"),
                           (bad, "unknown column")):
        out = tmp_path / "o.zarr"
        assert main(["convert", str(small), str(out), "--targets", str(inside),
                     "--recalibrate", str(locks), "--quiet"]) == 2
        line = one_error_line(capsys)
        assert str(locks) in line and problem in line
        assert not out.exists()


# -- schedulers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["synchronous", "single-threaded", "threads", "processes"])
def test_dask_scheduler_names_are_accepted(name, small, inside, tmp_path):
    out = tmp_path / f"{name}.zarr"
    assert main(["convert", str(small), str(out), "--scheduler", name, "--quiet",
                 "--targets", str(inside)]) == 0
    reference = ionmap.convert(small, tmp_path / "ref.zarr", targets=inside)
    assert (ionmap.open_result(out).ion_images.compute()
            == reference.ion_images.compute()).all()


@pytest.mark.parametrize("address", ["127.0.0.1", "tcp://127.0.0.1", "thread"])
def test_scheduler_without_port_is_one_line(address, small, inside, tmp_path, capsys):
    assert main(["convert", str(small), str(tmp_path / "o.zarr"), "--scheduler", address,
                 "--quiet", "--targets", str(inside)]) == 2
    line = one_error_line(capsys)
    assert address in line and "port" in line
    assert not (tmp_path / "o.zarr").exists()


def unused_port() -> int:
    """A 127.0.0.1 port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_said_within_seconds(small, inside, tmp_path, capsys):
    port = unused_port()
    start = time.monotonic()
    assert main(["convert", str(small), str(tmp_path / "o.zarr"), "--scheduler",
                 f"tcp://127.0.0.1:{port}", "--quiet", "--targets", str(inside)]) == 2
    assert time.monotonic() - start < 20  # distributed's default wait was 30 s
    line = one_error_line(capsys)
    assert f"127.0.0.1:{port}" in line and "cannot reach the Dask scheduler" in line


# -- overwriting -----------------------------------------------------------------------------


def test_synth_refuses_to_overwrite(tmp_path, capsys):
    args = ["synth", str(tmp_path), "--type", "centroid", "--shape", "40x48"]
    assert main(args) == 0
    first = (tmp_path / "sample.ibd").read_bytes()
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    line = one_error_line(capsys)
    assert "sample.imzML" in line and "--overwrite" in line and "overwrite=True" not in line
    assert (tmp_path / "sample.ibd").read_bytes() == first
    assert main([*args, "--seed", "1", "--cells-format", "geojson", "--overwrite"]) == 0
    assert (tmp_path / "sample.ibd").read_bytes() != first
    assert not (tmp_path / "sample.cells.csv").exists()  # no stale cells of the other format


def test_demo_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "output").mkdir()
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert str(tmp_path) in line and "--overwrite" in line
    assert not (tmp_path / "input").exists()


def test_api_errors_name_keyword_arguments(small, inside, tmp_path):
    from ionmap import synth

    synth.make_sample(tmp_path, "s", spectrum_type="centroid", shape=(40, 48))
    with pytest.raises(InputError, match=r"overwrite=True") as caught:
        synth.make_sample(tmp_path, "s", spectrum_type="centroid", shape=(40, 48))
    assert "--" not in str(caught.value)
    ionmap.convert(small, tmp_path / "o.zarr", targets=inside)
    with pytest.raises(IonmapError, match=r"overwrite=True") as caught:
        ionmap.convert(small, tmp_path / "o.zarr", targets=inside)
    assert "--" not in str(caught.value)
    assert cli_wording(str(caught.value)).count("--overwrite") == 1


def test_library_convert_shows_no_progress_bar(small, inside, tmp_path, capfd):
    ionmap.convert(small, tmp_path / "o.zarr", targets=inside)
    assert capfd.readouterr().err == ""


# -- interruptions ---------------------------------------------------------------------------

# The real command with every band slowed down, so that the signal arrives mid-conversion.
_SLOW = """
import sys, time
import ionmap.engine._convert as c
real = c._band_task
def slow(*args, **kwargs):
    time.sleep(0.25)
    return real(*args, **kwargs)
c._band_task = slow
c.choose_band_rows = lambda *args: 1
from ionmap.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _interrupted(imzml: Path, out: Path, sig: int, targets: Path) -> tuple[int, str]:
    """Run a slowed ``convert`` with stderr on a pseudo terminal, send ``sig`` once the
    store exists; return the exit code and everything written to the terminal."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, "convert", str(imzml), str(out),
                             "--workers", "1", "--targets", str(targets)], stdout=subprocess.DEVNULL, stderr=slave,
                            stdin=subprocess.DEVNULL, env=env,
                            # a test run started in the background inherits SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    deadline = time.monotonic() + 60
    while not (out / "zarr.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(sig)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_interrupted_convert_restores_the_cursor_and_says_resume(sig, code, word,
                                                                  write_imzml, tmp_path,
                                                                  capsys):
    imzml = write_imzml("tall", shape=(40, 4)).path
    out = tmp_path / "o.zarr"
    rc, terminal = _interrupted(imzml, out, sig, targets_csv(tmp_path, "name,mz\na,300.0\n"))
    assert rc == code, terminal
    hidden, shown = terminal.rfind("\x1b[?25l"), terminal.rfind("\x1b[?25h")
    assert hidden >= 0 and shown > hidden  # the progress bar hid the cursor and showed it
    last = terminal.strip().splitlines()[-1]
    assert f"ionmap: {word}" in last and str(out) in last and "--resume" in last
    assert "Traceback" not in terminal
    with pytest.raises(IonmapError, match="incomplete"):
        ionmap.open_result(out)
    assert main(["convert", str(imzml), str(out), "--resume", "--quiet", "--targets",
                 str(tmp_path / "targets.csv")]) == 0
    assert ionmap.open_result(out).complete


def test_pipeline_with_an_unreachable_scheduler_fails_once_up_front(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):  # never opened: the scheduler is refused before any sample
        (tmp_path / "in" / f"{name}.imzML").write_text("")
    port = unused_port()
    config = Path(__file__).resolve().parents[2] / "pipelines" / "tme-negative.toml"
    assert main(["run", str(config), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out"), "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no "[1/2] a ... failed" per sample
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0], err
    assert "cannot reach the Dask scheduler" in err[0]
    assert not (tmp_path / "out" / "a").exists() and not (tmp_path / "out" / "b").exists()


def test_pipeline_refuses_a_scheduler_without_port(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    config = Path(__file__).resolve().parents[2] / "pipelines" / "tme-negative.toml"
    assert main(["run", str(config), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out"), "--scheduler", "127.0.0.1"]) == 2
    assert "port" in one_error_line(capsys)


# -- a newcomer's sweep: more mistakes, each one line naming the file or flag ---------------

CELLS = "x,y,cell_type\n100.0,120.0,CD8\n140.0,90.0,Tumor\n"
# (command with {small} {out} {tmp} placeholders, files to write first, words the line holds)
MISTAKES = {
    "targets m/z inf": ("convert {small} {out} --targets {tmp}/t.csv",
                        {"t.csv": "name,mz\na,inf\nb,300\n"}, ["t.csv", "line 2", "finite"]),
    "targets mz against formula": (
        "convert {small} {out} --targets {tmp}/t.csv",
        {"t.csv": "name,formula,adduct,mz\nlac,C3H6O3,[M-H]-,500\n"},
        ["t.csv", "line 2", "disagrees", "89.0244"]),
    "targets unknown adduct": ("convert {small} {out} --targets {tmp}/t.csv",
                               {"t.csv": "name,formula,adduct\nlac,C3H6O3,[M+Q]-\n"},
                               ["t.csv", "line 2", "adduct '[M+Q]-'", "'Q'"]),
    "targets header only": ("convert {small} {out} --targets {tmp}/t.csv", {"t.csv": "name,mz\n"},
                            ["t.csv", "no targets"]),
    "targets negative m/z": ("convert {small} {out} --targets {tmp}/t.csv",
                             {"t.csv": "name,mz\na,-300\n"}, ["t.csv", "line 2", "positive"]),
    "targets duplicated names": ("convert {small} {out} --targets {tmp}/t.csv",
                                 {"t.csv": "name,mz\na,300\na,600\n"}, ["t.csv", "duplicate"]),
    "targets not UTF-8": ("convert {small} {out} --targets {tmp}/t.csv",
                          {"t.csv": "name,mz\n\xb5-lac,300\n".encode("latin-1")},
                          ["t.csv", "utf-8"]),
    "targets with semicolons": ("convert {small} {out} --targets {tmp}/t.csv",
                                {"t.csv": "name;mz\na;300\n"}, ["t.csv", "unknown column"]),
    "ppm beyond the m/z axis": ("convert {small} {out} --ppm 1e7", {}, ["ppm", "below"]),
    "output is a file": ("convert {small} {tmp}/a.txt", {"a.txt": "x"}, ["a.txt", "is a file"]),
    "input is the .ibd": ("convert {ibd} {out}", {}, [".ibd", "open the .imzML"]),
    "panel typo": ("convert {small} {out} --panel tme-negatve", {},
                   ["tme-negatve", "built-in: tme-negative"]),
    "unknown normalisation (usage)": ("convert {small} {out} --normalize TIC", {},
                                      ["--normalize", "'TIC'", "--help"]),
    "size unit typo (usage)": ("synth {tmp}/s --size 1XB", {}, ["--size", "1XB", "--help"]),
    "cells not UTF-8": ("hotspots {tmp}/r.zarr --cells {tmp}/c.csv --register auto --out {tmp}/h",
                        {"c.csv": "x,y,cell_type\n1,2,CD8\xb5\n".encode("latin-1")},
                        ["c.csv", "UTF-8"]),
    "cells with other column names": (
        "hotspots {tmp}/r.zarr --cells {tmp}/c.csv --register auto --out {tmp}/h",
        {"c.csv": "cx,cy,celltype\n1,2,CD8\n"}, ["c.csv", "no centroid columns"]),
    "class table for a CSV": (
        "hotspots {tmp}/r.zarr --cells {tmp}/c.csv --class-table {tmp}/c.csv --register auto "
        "--out {tmp}/h", {"c.csv": CELLS}, ["c.csv", "--class-table", "label-mask TIFF"]),
    "rim width 0": ("hotspots {tmp}/r.zarr --cells {tmp}/c.csv --register auto --rim-um 0 "
                    "--out {tmp}/h", {"c.csv": CELLS}, ["rim_um", "positive"]),
    "negative permutations": ("hotspots {tmp}/r.zarr --cells {tmp}/c.csv --register auto "
                              "--permutations -1 --out {tmp}/h", {"c.csv": CELLS},
                              ["n_permutations", ">= 0"]),
    "pipeline targets missing": ("run {tmp}/p.toml --input {tmp}/in --output {tmp}/o",
                                 {"p.toml": '[convert]\ntargets = "nope.csv"\n'},
                                 ["nope.csv", "cannot read targets"]),
    "pipeline section typo": ("run {tmp}/p.toml --input {tmp}/in --output {tmp}/o",
                              {"p.toml": "[hotspot]\nfdr = 0.1\n"}, ["p.toml", "hotspot"]),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_newcomer_mistakes_are_one_line(case, small, tmp_path, capsys):
    command, files, words = MISTAKES[case]
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    args = command.format(small=small, ibd=small.with_suffix(".ibd"), out=tmp_path / "o.zarr",
                          tmp=tmp_path).split()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert ": error: " in err[0] and all(w in err[0] for w in words), err[0]
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "h").exists()
    assert not (tmp_path / "o").exists()  # a pipeline refused up front writes nothing
