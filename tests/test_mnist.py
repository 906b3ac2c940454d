"""Tests for initlab.data.mnist: locating, verifying, downloading and parsing the MNIST IDX files."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from initlab.data import mnist
from initlab.errors import InitlabError

import subprocess
import sys

from conftest import shared_mnist_dir

SHARED = shared_mnist_dir()
needs_data = pytest.mark.skipif(
    not all((SHARED / f.gz_name).is_file() for f in mnist.FILES.values()),
    reason=f"MNIST .gz files not found in {SHARED} (set INITLAB_DATA_DIR to a folder holding them)",
)

# REFERENCE.md, "Known statistics".
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test away from the real user cache, env overrides and public mirrors."""
    cache_root = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_root))
    monkeypatch.delenv("INITLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("INITLAB_MNIST_MIRRORS", f"http://127.0.0.1:{closed_port()}/")
    return cache_root


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released), so connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on loopback for the duration of the block; yield its base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def link_shared(directory: Path, skip: str | None = None) -> None:
    """Symlink the shared .gz files into ``directory``, except the one named ``skip``."""
    directory.mkdir(parents=True, exist_ok=True)
    for spec in mnist.FILES.values():
        if spec.name != skip:
            (directory / spec.gz_name).symlink_to(SHARED / spec.gz_name)


def shared_bytes(name: str) -> bytes:
    return gzip.decompress((SHARED / (name + ".gz")).read_bytes())


def idx(dims: tuple[int, ...], data: bytes, type_byte: int = 0x08) -> bytes:
    return bytes([0, 0, type_byte, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data


# --------------------------------------------------------------------------- read_idx


def test_read_idx_parses_a_hand_built_file() -> None:
    raw = idx((2, 3), bytes([0, 1, 2, 253, 254, 255]))
    array = mnist.read_idx(raw)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, np.array([[0, 1, 2], [253, 254, 255]], dtype=np.uint8))


def test_read_idx_one_dimensional() -> None:
    np.testing.assert_array_equal(mnist.read_idx(idx((4,), bytes([9, 8, 7, 6]))), [9, 8, 7, 6])


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x00", "only 2 bytes"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x05", "magic"),
        (idx((2,), b"\x00\x00", type_byte=0x0D), "type byte 0x0d"),
        (bytes([0, 0, 8, 0]), "no dimensions"),
        (bytes([0, 0, 8, 3]) + struct.pack(">I", 1), "header truncated"),
        (idx((2, 3), bytes(5)), "length mismatch"),
        (idx((2, 3), bytes(7)), "length mismatch"),
    ],
    ids=["too-short", "bad-magic", "wrong-type", "zero-dims", "short-header", "data-short", "data-long"],
)
def test_read_idx_rejects_malformed_input(raw: bytes, match: str) -> None:
    with pytest.raises(InitlabError, match=match) as info:
        mnist.read_idx(raw, name="tiny-file")
    assert "tiny-file" in str(info.value)


# --------------------------------------------------------------------------- search order


def test_candidate_dirs_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert mnist.cache_dir() == cache / "initlab" / "mnist"
    assert mnist.candidate_dirs() == [cache / "initlab" / "mnist"]
    monkeypatch.setenv("INITLAB_DATA_DIR", str(tmp_path / "env"))
    assert mnist.candidate_dirs() == [tmp_path / "env", cache / "initlab" / "mnist"]
    assert mnist.candidate_dirs(str(tmp_path / "flag")) == [tmp_path / "flag"]  # named: that folder only


def test_cache_dir_falls_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert mnist.cache_dir() == tmp_path / ".cache" / "initlab" / "mnist"


def test_mirrors_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INITLAB_MNIST_MIRRORS")
    assert mnist.mirror_urls() == mnist.MIRRORS
    assert mnist.MIRRORS[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    monkeypatch.setenv("INITLAB_MNIST_MIRRORS", " http://a/ , http://b/x/,")
    assert mnist.mirror_urls() == ("http://a/", "http://b/x/")


@needs_data
def test_locate_uses_first_complete_folder_and_prefers_uncompressed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    partial, full = tmp_path / "partial", tmp_path / "full"
    link_shared(partial, skip=TEST_LABELS)
    link_shared(full)
    (full / TEST_LABELS).write_bytes(shared_bytes(TEST_LABELS))
    monkeypatch.setenv("INITLAB_DATA_DIR", str(full))
    assert mnist.locate(partial) is None  # a folder named explicitly is never swapped for another
    monkeypatch.setenv("INITLAB_DATA_DIR", str(partial))
    assert mnist.locate() is None  # files are never mixed across folders
    monkeypatch.setenv("INITLAB_DATA_DIR", str(full))
    found = mnist.locate()
    assert found is not None
    assert {p.parent for p in found.values()} == {full}
    assert found[TEST_LABELS].name == TEST_LABELS  # uncompressed wins over .gz
    assert found[TRAIN_LABELS].name == TRAIN_LABELS + ".gz"


def test_load_without_download_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INITLAB_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(InitlabError) as info:
        mnist.load(download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "env") in message and str(mnist.cache_dir()) in message
    assert "initlab data fetch" in message and "--data-dir" in message and "INITLAB_DATA_DIR" in message


# --------------------------------------------------------------------------- load real data


@pytest.fixture(scope="module")
def arrays() -> mnist.MnistArrays:
    if not all((SHARED / f.gz_name).is_file() for f in mnist.FILES.values()):
        pytest.skip(f"MNIST .gz files not found in {SHARED}")
    return mnist.load(SHARED, download=False, progress=False)


def test_load_shapes_and_dtypes(arrays: mnist.MnistArrays) -> None:
    assert arrays.train_images.shape == (60000, 28, 28)
    assert arrays.train_labels.shape == (60000,)
    assert arrays.test_images.shape == (10000, 28, 28)
    assert arrays.test_labels.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in arrays)


def test_load_label_counts_match_reference(arrays: mnist.MnistArrays) -> None:
    assert np.bincount(arrays.train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(arrays.test_labels, minlength=10).tolist() == TEST_COUNTS


def test_load_pixel_statistics_match_reference(arrays: mnist.MnistArrays) -> None:
    pixels = arrays.train_images.astype(np.float64) / 255.0
    assert round(float(pixels.mean()), 4) == 0.1307
    assert round(float(pixels.std()), 4) == 0.3081


@needs_data
def test_load_accepts_uncompressed_files(tmp_path: Path) -> None:
    for spec in mnist.FILES.values():
        (tmp_path / spec.name).write_bytes(shared_bytes(spec.name))
    data = mnist.load(tmp_path, download=False, progress=False)
    assert np.bincount(data.test_labels, minlength=10).tolist() == TEST_COUNTS
    assert data.train_images.shape == (60000, 28, 28)


# --------------------------------------------------------------------------- corrupted local files


def corrupt_copy(tmp_path: Path, name: str, content: bytes, *, gz: bool) -> Path:
    """A folder with the shared files, except ``name`` replaced by ``content``; return the bad file."""
    link_shared(tmp_path, skip=name)
    bad = tmp_path / (name + ".gz" if gz else name)
    bad.write_bytes(content)
    return bad


@needs_data
@pytest.mark.parametrize(
    ("make", "gz", "match"),
    [
        (lambda raw: raw[:1000], False, r"truncated: 1,000 of 60,008 bytes"),
        (lambda raw: raw + b"\x00", False, r"wrong size: 60,009 bytes"),
        (lambda raw: raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:], False, "checksum mismatch"),
        (lambda raw: gzip.compress(raw)[:5000], True, "truncated gzip"),
        (lambda raw: b"this is not gzip at all", True, "not a valid gzip"),
        (lambda raw: gzip.compress(raw[:-1] + bytes([raw[-1] ^ 1])), True, "checksum mismatch"),
    ],
    ids=["truncated", "too-long", "flipped-byte", "truncated-gz", "not-gzip", "flipped-byte-gz"],
)
def test_load_rejects_damaged_file_naming_it(tmp_path: Path, make, gz: bool, match: str) -> None:
    bad = corrupt_copy(tmp_path, TRAIN_LABELS, make(shared_bytes(TRAIN_LABELS)), gz=gz)
    with pytest.raises(InitlabError, match=match) as info:
        mnist.load(tmp_path, download=False, progress=False)
    message = str(info.value)
    assert str(bad) in message and "\n" not in message
    assert "delete it" in message and "initlab data fetch" in message


@needs_data
def test_verify_file_returns_the_decompressed_bytes() -> None:
    raw = mnist.verify_file(SHARED / (TEST_LABELS + ".gz"))
    assert len(raw) == mnist.FILES[TEST_LABELS].size
    with pytest.raises(InitlabError, match="not an MNIST file name"):
        mnist.verify_file(SHARED / "labels.gz")


# --------------------------------------------------------------------------- check


@needs_data
def test_check_reports_ok_for_shared_data() -> None:
    statuses = mnist.check(SHARED)
    assert [s.name for s in statuses] == list(mnist.FILES)
    assert [s.status for s in statuses] == ["ok"] * 4
    assert all(s.path is not None and s.path.parent == SHARED for s in statuses)


@needs_data
def test_check_reports_missing_and_corrupt_without_raising(tmp_path: Path) -> None:
    (tmp_path / TRAIN_LABELS).write_bytes(shared_bytes(TRAIN_LABELS)[:1000])
    (tmp_path / (TEST_LABELS + ".gz")).write_bytes(b"garbage")
    by_name = {s.name: s for s in mnist.check(tmp_path)}
    assert by_name[TRAIN_LABELS].status == "corrupt" and "truncated" in by_name[TRAIN_LABELS].detail
    assert by_name[TEST_LABELS].status == "corrupt" and "gzip" in by_name[TEST_LABELS].detail
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        assert by_name[name].status == "missing" and by_name[name].path is None


def test_check_of_a_missing_folder_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(InitlabError, match=f"{tmp_path / 'nope'}: no such folder; `initlab data fetch --data-dir"):
        mnist.check(tmp_path / "nope")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InitlabError, match="file: not a folder"):
        mnist.check(tmp_path / "file")


# --------------------------------------------------------------------------- download


def assert_fetched(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == sorted(f.gz_name for f in mnist.FILES.values())
    assert [s.status for s in mnist.check(directory)] == ["ok"] * 4


@needs_data
def test_fetch_downloads_into_cache_skipping_a_dead_mirror(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    with serve(SHARED) as good:
        monkeypatch.setenv("INITLAB_MNIST_MIRRORS", f"http://127.0.0.1:{closed_port()}/,{good}missing/,{good}")
        directory = mnist.fetch(progress=False)
    assert directory == isolated_env / "initlab" / "mnist" == mnist.cache_dir()
    assert_fetched(directory)  # also proves no .part temp file was left behind
    # Now found locally: a second fetch and a load must not need the network.
    monkeypatch.setenv("INITLAB_MNIST_MIRRORS", f"http://127.0.0.1:{closed_port()}/")
    assert mnist.fetch(progress=False) == directory


@needs_data
def test_fetch_falls_back_when_a_mirror_serves_a_corrupted_file(tmp_path: Path) -> None:
    bad_mirror, target = tmp_path / "bad", tmp_path / "target"
    link_shared(bad_mirror, skip=TEST_LABELS)
    (bad_mirror / (TEST_LABELS + ".gz")).write_bytes(gzip.compress(shared_bytes(TEST_LABELS)[:-1] + b"\x07"))
    # Only the small label files are missing, to keep the transfer tiny.
    target.mkdir()
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        shutil.copy(SHARED / (name + ".gz"), target)
    with serve(bad_mirror) as bad, serve(SHARED) as good:
        directory = mnist.fetch(target, progress=True, mirrors=[bad, good])
    assert directory == target
    assert_fetched(target)


@needs_data
def test_fetch_errors_when_every_mirror_is_bad(tmp_path: Path) -> None:
    bad_mirror, target = tmp_path / "bad", tmp_path / "target"
    bad_mirror.mkdir()
    for spec in mnist.FILES.values():
        (bad_mirror / spec.gz_name).write_bytes(gzip.compress(b"not mnist"))
    with serve(bad_mirror) as bad, pytest.raises(InitlabError, match="failed from every mirror") as info:
        mnist.fetch(target, progress=False, mirrors=[bad])
    assert "wrong size" in str(info.value) or "truncated" in str(info.value)
    assert list(target.iterdir()) == []  # nothing unverified was kept


def test_fetch_offline_is_one_actionable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INITLAB_MNIST_MIRRORS", f"http://127.0.0.1:{closed_port()}/,http://127.0.0.1:{closed_port()}/")
    with pytest.raises(InitlabError) as info:
        mnist.load(progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "offline?" in message
    assert all(f.gz_name in message for f in mnist.FILES.values())
    assert str(mnist.cache_dir()) in message and "--data-dir" in message and "INITLAB_DATA_DIR" in message
    assert [p for p in mnist.cache_dir().iterdir()] == []


def test_fetch_offline_on_a_terminal_shows_only_the_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No line per unreachable mirror and no empty progress bar: what a terminal shows is the error."""
    import io
    import re

    from rich.console import Console

    monkeypatch.setenv("INITLAB_MNIST_MIRRORS", ",".join(f"http://127.0.0.1:{closed_port()}/m{i}/" for i in range(3)))
    screen = io.StringIO()
    monkeypatch.setattr(mnist, "Console", lambda **kwargs: Console(file=screen, force_terminal=True, width=100))
    with pytest.raises(InitlabError, match=r"failed from every mirror \(\[Errno 111\] Connection refused; offline\?\)"):
        mnist.fetch(tmp_path, progress=True)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", screen.getvalue())
    assert shown.strip() == ""


@needs_data
def test_fetch_refuses_a_corrupt_local_file_instead_of_downloading(tmp_path: Path) -> None:
    link_shared(tmp_path, skip=TEST_LABELS)
    bad = tmp_path / TEST_LABELS
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(InitlabError, match="truncated: 10 of 10,008") as info:
        mnist.fetch(tmp_path, progress=False)
    assert str(bad) in str(info.value)


@contextlib.contextmanager
def hanging_server() -> Iterator[str]:
    """A loopback server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


@needs_data
def test_a_hanging_mirror_times_out_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(mnist, "TIMEOUT_S", 0.5)
    target = tmp_path / "target"
    target.mkdir()
    for spec in mnist.FILES.values():
        if spec.name != TEST_LABELS:  # only the small label file to fetch
            shutil.copy(SHARED / spec.gz_name, target)
    with hanging_server() as hanging, serve(SHARED) as good:
        mnist.fetch(target, progress=False, mirrors=[hanging, good])
    err = capsys.readouterr().err
    assert f"{hanging}{TEST_LABELS}.gz: timed out" in err and "trying the next mirror" in err
    assert_fetched(target)


def test_a_missing_data_dir_is_an_error_not_a_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INITLAB_DATA_DIR", str(SHARED))  # would have been used instead, silently
    with pytest.raises(InitlabError, match=f"--data-dir {tmp_path / 'typo'}: no such folder"):
        mnist.load(tmp_path / "typo", download=True, progress=False)
    assert not (tmp_path / "typo").exists()


# --------------------------------------------------------------------------- the verified decompressed copy


def copy_with_labels(tmp_path: Path, name: str = TRAIN_LABELS) -> Path:
    """A folder holding the shared files, ``name`` as a real .gz file (not a link) so its mtime can move."""
    link_shared(tmp_path, skip=name)
    (tmp_path / (name + ".gz")).write_bytes((SHARED / (name + ".gz")).read_bytes())
    return tmp_path / (name + ".gz")


@needs_data
def test_load_keeps_a_verified_copy_and_reads_it_without_decompressing(tmp_path: Path, monkeypatch) -> None:
    first = mnist.load(SHARED, download=False, progress=False)
    copies = sorted(p.name.split(".")[0] for p in mnist.verified_copy_dir().iterdir())
    assert copies == sorted(mnist.FILES)

    def no_gunzip(raw, spec):
        raise AssertionError("decompressed again")

    monkeypatch.setattr(mnist, "_gunzip", no_gunzip)
    again = mnist.load(SHARED, download=False, progress=False)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


@needs_data
def test_a_damaged_copy_is_noticed_and_remade_from_the_source(tmp_path: Path) -> None:
    mnist.load(SHARED, download=False, progress=False)
    (copy,) = mnist.verified_copy_dir().glob(TRAIN_LABELS + ".*")
    raw = bytearray(copy.read_bytes())
    raw[500] ^= 0xFF
    copy.write_bytes(bytes(raw))
    data = mnist.load(SHARED, download=False, progress=False)
    assert np.bincount(data.train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert copy.read_bytes() == shared_bytes(TRAIN_LABELS)  # rewritten from the verified source


@needs_data
def test_a_changed_source_is_verified_again_not_served_from_the_copy(tmp_path: Path) -> None:
    source = copy_with_labels(tmp_path)
    mnist.load(tmp_path, download=False, progress=False)
    raw = shared_bytes(TRAIN_LABELS)
    source.write_bytes(gzip.compress(raw[:-1] + bytes([raw[-1] ^ 1])))  # same size once decompressed
    with pytest.raises(InitlabError, match="checksum mismatch") as info:
        mnist.load(tmp_path, download=False, progress=False)
    assert str(source) in str(info.value)
    assert len(list(mnist.verified_copy_dir().glob(TRAIN_LABELS + ".*"))) == 1  # the old copy is not trusted


@needs_data
def test_a_read_only_cache_only_costs_time(tmp_path: Path, monkeypatch) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setattr(mnist, "verified_copy_dir", lambda: blocked / "verified")
    data = mnist.load(SHARED, download=False, progress=False)
    assert np.bincount(data.test_labels, minlength=10).tolist() == TEST_COUNTS


GZIP_BOMB = """
import sys, zlib
from pathlib import Path
from initlab.data import mnist
from initlab.errors import InitlabError
path = Path(sys.argv[1]) / "train-images-idx3-ubyte.gz"
z = zlib.compressobj(1, zlib.DEFLATED, 31)
with open(path, "wb") as f:  # 1 GiB of zeros, about 1 MB compressed
    for _ in range(1024):
        f.write(z.compress(bytes(1 << 20)))
    f.write(z.flush())
try:
    mnist.verify_file(path)
except InitlabError as e:
    print(e)
status = Path("/proc/self/status").read_text()  # VmHWM: this program's peak (ru_maxrss keeps the parent's across exec)
print(int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1]) // 1024)
"""


def test_a_gzip_bomb_is_refused_at_the_expected_size(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", GZIP_BOMB, str(tmp_path)], capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    assert "wrong size: more than 47,040,016 bytes once decompressed" in out[0]
    assert int(out[1]) < 400  # MiB at peak: the expected size, not the 1 GiB it inflates to
