"""MNIST as four verified IDX files: where to find them, how to download them, how to parse them.

MNIST (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition") ships as four IDX files. Every byte we hand to training is first checked against
the SHA-256 of the *decompressed* file (``FILES``): gzip containers differ
between copies, their content must not, and a truncated or corrupted file must be an error
rather than silent garbage.

``load`` keeps a verified decompressed copy of each ``.gz`` file in the cache
(``verified_copy_dir()``), so a run does not inflate 55 MB again; the copy's SHA-256 is checked on
every read, and it is remade whenever the source file changes.

Search order for the files: an explicit ``data_dir`` (the CLI's ``--data-dir``), then
``$INITLAB_DATA_DIR``, then the user cache (``$XDG_CACHE_HOME/initlab/mnist``). The first of
those folders that holds all four files is used; if none does, they are downloaded into the
first folder of that list.

References: docs/references.md [lecun1998gradient].
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import http.client
import os
import secrets
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from initlab.errors import InitlabError


class MnistFile(NamedTuple):
    """One of the four MNIST files, as published: its decompressed size and SHA-256."""

    name: str  # file name without ".gz"
    size: int  # bytes once decompressed
    sha256: str  # hex digest of the decompressed bytes

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"


FILES: dict[str, MnistFile] = {
    f.name: f
    for f in (
        MnistFile(
            "train-images-idx3-ubyte",
            47_040_016,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        MnistFile(
            "train-labels-idx1-ubyte",
            60_008,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        MnistFile(
            "t10k-images-idx3-ubyte",
            7_840_016,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        MnistFile(
            "t10k-labels-idx1-ubyte",
            10_008,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    )
}

# Tried in order; the original author's site comes last because it often refuses scripts.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

MIRRORS_ENV = "INITLAB_MNIST_MIRRORS"
DATA_DIR_ENV = "INITLAB_DATA_DIR"
TIMEOUT_S = 10.0  # per socket operation, so a stalled mirror falls through to the next one (said on stderr)
_CHUNK = 1 << 16
_FIX = "delete it and run `initlab data fetch`"

Status = Literal["ok", "missing", "corrupt"]


class MnistArrays(NamedTuple):
    """The MNIST splits as read-only uint8 arrays, straight from the IDX files."""

    train_images: np.ndarray  # (60000, 28, 28) uint8, 0 = background
    train_labels: np.ndarray  # (60000,) uint8 in 0..9
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8 in 0..9


class FileStatus(NamedTuple):
    """What ``check`` found for one file: status is 'ok', 'missing' or 'corrupt'."""

    name: str
    path: Path | None
    status: Status
    detail: str


class _CorruptFile(Exception):
    """Internal: the bytes are not the expected file; the message says how they differ."""


# --------------------------------------------------------------------------- where the files live


def cache_dir() -> Path:
    """Return the per-user download folder: ``$XDG_CACHE_HOME/initlab/mnist`` or ``~/.cache/initlab/mnist``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "initlab" / "mnist"


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Return the folders searched for MNIST, in order: ``data_dir`` alone when given (a folder
    named explicitly is never silently swapped for another), else ``$INITLAB_DATA_DIR``, then ``cache_dir()``.

    The first entry is also where ``fetch`` downloads to when no folder holds all four files.
    """
    if data_dir is not None and str(data_dir) != "":
        return [Path(data_dir).expanduser()]
    dirs: list[Path] = []
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(cache_dir())
    # An env var pointing at the cache itself should not be searched twice.
    return list(dict.fromkeys(dirs))


def files_in(directory: str | Path) -> dict[str, Path]:
    """Return the MNIST files present in ``directory``, by name; ``NAME`` wins over ``NAME.gz``."""
    directory = Path(directory)
    found: dict[str, Path] = {}
    for spec in FILES.values():
        for candidate in (directory / spec.name, directory / spec.gz_name):
            if candidate.is_file():
                found[spec.name] = candidate
                break
    return found


def locate(data_dir: str | Path | None = None) -> dict[str, Path] | None:
    """Return the four file paths from the first candidate folder holding all four, else ``None``.

    Files are never mixed across folders: a half-filled ``--data-dir`` next to a complete cache
    would otherwise make the result depend on which copy of each file happened to be found.
    """
    for directory in candidate_dirs(data_dir):
        found = files_in(directory)
        if len(found) == len(FILES):
            return found
    return None


def resolve_dir(data_dir: str | Path | None = None) -> Path:
    """Return the folder ``load``/``fetch`` would use: the located one, else the download target."""
    found = locate(data_dir)
    if found is not None:
        return next(iter(found.values())).parent
    return candidate_dirs(data_dir)[0]


# --------------------------------------------------------------------------- verification


def _spec_for(path: Path) -> MnistFile:
    name = path.name.removesuffix(".gz")
    if name not in FILES:
        raise InitlabError(f"{path}: not an MNIST file name; expected one of {', '.join(FILES)} (optionally .gz)")
    return FILES[name]


def _gunzip(raw: bytes, spec: MnistFile) -> bytes:
    """The decompressed bytes, streamed and stopped one byte past ``spec.size``: a "gzip bomb"
    (28 MB that inflates to gigabytes) costs at most the expected size in memory."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            data = f.read(spec.size + 1)
    except gzip.BadGzipFile as exc:
        raise _CorruptFile(f"not a valid gzip file ({exc})") from None
    except EOFError:
        raise _CorruptFile(f"truncated gzip file (compressed stream ends early after {len(raw):,} bytes)") from None
    except zlib.error as exc:
        raise _CorruptFile(f"not a valid gzip file (corrupt compressed data: {exc})") from None
    if len(data) > spec.size:
        raise _CorruptFile(f"wrong size: more than {spec.size:,} bytes once decompressed")
    return data


# gzip never grows incompressible data by more than a few bytes per block: a compressed file (or a
# download) larger than this is not the file we want.
def _gz_limit(spec: MnistFile) -> int:
    return spec.size + (1 << 20)


def _check_size(size: int, spec: MnistFile) -> None:
    if size < spec.size:
        raise _CorruptFile(f"truncated: {size:,} of {spec.size:,} bytes")
    if size > spec.size:
        raise _CorruptFile(f"wrong size: {size:,} bytes, expected {spec.size:,}")


def _check_bytes(data: bytes, spec: MnistFile) -> bytes:
    _check_size(len(data), spec)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise _CorruptFile(f"checksum mismatch (sha256 {digest[:12]}…, expected {spec.sha256[:12]}…)")
    return data


def _read_verified(path: Path, spec: MnistFile) -> bytes:
    if path.name.endswith(".gz"):
        size = path.stat().st_size
        if size > _gz_limit(spec):
            raise _CorruptFile(f"wrong size: {size:,} bytes compressed, more than the {spec.size:,} it should hold")
        return _check_bytes(_gunzip(path.read_bytes(), spec), spec)
    # Check the size before reading, so a wrong multi-gigabyte file is rejected cheaply.
    _check_size(path.stat().st_size, spec)
    return _check_bytes(path.read_bytes(), spec)


def verified_copy_dir() -> Path:
    """Where ``load`` keeps decompressed copies of verified ``.gz`` files: ``cache_dir()/verified``."""
    return cache_dir() / "verified"


def _read_via_copy(path: Path, spec: MnistFile) -> bytes:
    """A ``.gz`` file's verified decompressed bytes, without decompressing it again on every run.

    The first read decompresses and verifies the file as ``verify_file`` does and keeps the bytes
    in ``verified_copy_dir()``, under a name keyed by the source's resolved path, size and
    modification time; a later read of the unchanged source reads that copy instead and checks
    its SHA-256 again (hashing 55 MB costs a fraction of inflating it). A source that changed
    (a new mtime or size) gets a new key, so it is decompressed and verified afresh; a damaged
    copy fails its hash and is replaced from the source. An uncompressed source is read directly.
    """
    if not path.name.endswith(".gz"):
        return _read_verified(path, spec)
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    copy = verified_copy_dir() / f"{spec.name}.{key}"
    try:
        return _check_bytes(copy.read_bytes(), spec)
    except (OSError, _CorruptFile):
        pass  # no copy yet, or a damaged one: decompress the source
    data = _read_verified(path, spec)
    tmp = copy.with_name(f".{copy.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, copy)
        for old in copy.parent.glob(f"{spec.name}.*"):  # copies of earlier versions of the source
            if old != copy and not old.name.endswith(".part"):
                old.unlink(missing_ok=True)
    except OSError:  # a read-only or full cache costs time on the next run, nothing else
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return data


def verify_file(path: str | Path, *, keep_copy: bool = False) -> bytes:
    """Return the decompressed bytes of one MNIST file after checking its size and SHA-256.

    ``path`` may be ``NAME`` or ``NAME.gz``; the name selects the expected hash. ``keep_copy``:
    read through (and keep) a verified decompressed copy in the cache (``_read_via_copy``). Raises
    ``InitlabError`` naming the file, what is wrong, and how to fix it.
    """
    path = Path(path)
    spec = _spec_for(path)
    try:
        return (_read_via_copy if keep_copy else _read_verified)(path, spec)
    except _CorruptFile as exc:
        raise InitlabError(f"{path}: {exc}; {_FIX}") from None
    except OSError as exc:
        raise InitlabError(f"{path}: cannot read ({exc.strerror or exc}); {_FIX}") from None


def check(directory: str | Path | None = None) -> list[FileStatus]:
    """Return one ``FileStatus`` per MNIST file in ``directory`` (default: ``resolve_dir()``).

    Never raises for missing or bad files: it reports them, for ``initlab data check``. A folder
    that does not exist is one ``InitlabError`` instead of four missing files.
    """
    directory = resolve_dir() if directory is None else Path(directory)
    if not directory.is_dir():
        what = "not a folder" if directory.exists() else "no such folder"
        raise InitlabError(f"{directory}: {what}; `initlab data fetch --data-dir {directory}` downloads MNIST into it")
    found = files_in(directory)
    statuses: list[FileStatus] = []
    for spec in FILES.values():
        path = found.get(spec.name)
        if path is None:
            statuses.append(FileStatus(spec.name, None, "missing", f"no {spec.name} or {spec.gz_name} in {directory}"))
            continue
        try:
            _read_verified(path, spec)
        except _CorruptFile as exc:
            statuses.append(FileStatus(spec.name, path, "corrupt", str(exc)))
        except OSError as exc:
            statuses.append(FileStatus(spec.name, path, "corrupt", f"cannot read ({exc.strerror or exc})"))
        else:
            statuses.append(FileStatus(spec.name, path, "ok", f"{spec.size:,} bytes, sha256 verified"))
    return statuses


# --------------------------------------------------------------------------- download


def mirror_urls() -> tuple[str, ...]:
    """Return the mirror base URLs to try: ``$INITLAB_MNIST_MIRRORS`` (comma-separated) or ``MIRRORS``."""
    env = os.environ.get(MIRRORS_ENV, "")
    override = tuple(url.strip() for url in env.split(",") if url.strip())
    return override or MIRRORS


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    elif isinstance(exc, TimeoutError):
        text = f"timed out after {TIMEOUT_S:g} s"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # the final error must stay on one line


def _download_one(url: str, spec: MnistFile, target: Path, bar: Progress, task: list[TaskID]) -> bytes:
    """Download one mirror's copy into a temp file beside the target, verify, then rename it in.
    ``task``: the file's progress bar, added (once) when a mirror answers."""
    final = target / spec.gz_name
    # Same folder as the final file, so os.replace is an atomic rename, never a cross-device copy.
    tmp = target / f".{spec.gz_name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    limit = _gz_limit(spec)  # and we should not fill the disk finding out
    buf = bytearray()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "xb") as out:
            length = response.headers.get("Content-Length")
            if not task:
                task.append(bar.add_task(spec.gz_name, total=None))
            bar.update(task[0], total=int(length) if length and length.isdigit() else None, completed=0)
            while chunk := response.read(_CHUNK):
                buf += chunk
                if len(buf) > limit:
                    raise _CorruptFile(f"response larger than {limit:,} bytes")
                out.write(chunk)
                bar.advance(task[0], len(chunk))
        data = _check_bytes(_gunzip(bytes(buf), spec), spec)
        os.replace(tmp, final)
        return data
    finally:
        tmp.unlink(missing_ok=True)


def _unreachable(exc: BaseException) -> bool:
    """A mirror that could not be reached at all (no network, no such host, connection refused):
    it fails at once, so it is said only in the final error, not on a line of its own."""
    return (
        isinstance(exc, urllib.error.URLError)
        and not isinstance(exc, urllib.error.HTTPError)
        and isinstance(exc.reason, OSError)
        and not isinstance(exc.reason, TimeoutError)
    )


def _download(spec: MnistFile, target: Path, bases: tuple[str, ...], bar: Progress) -> bytes:
    failures: dict[str, list[str]] = {}  # what went wrong -> the mirrors it went wrong at
    task: list[TaskID] = []
    for base in bases:
        url = base.rstrip("/") + "/" + spec.gz_name
        try:
            return _download_one(url, spec, target, bar, task)
        except (OSError, ValueError, http.client.HTTPException, _CorruptFile) as exc:
            # Any failure, a bad hash included, sends us to the next mirror; a slow or bad one is said as it happens.
            failures.setdefault(_describe(exc), []).append(base)
            if not _unreachable(exc) and base != bases[-1]:
                bar.console.print(
                    f"{url}: {_describe(exc)}; trying the next mirror", markup=False, highlight=False, soft_wrap=True
                )
    what = "; ".join(f"{', '.join(where)}: {why}" if len(failures) > 1 else why for why, where in failures.items())
    names = ", ".join(f.gz_name for f in FILES.values())
    raise InitlabError(
        f"downloading {spec.gz_name} failed from every mirror ({what}; offline?). To install by hand, put {names} "
        f"(.gz or not) in {target}, or point --data-dir or {DATA_DIR_ENV} at a folder holding them"
    )


def _acquire(
    data_dir: str | Path | None,
    *,
    download: bool,
    progress: bool,
    bases: tuple[str, ...] | None,
    create: bool = False,
) -> tuple[Path, dict[str, bytes]]:
    """Return the folder used and every file's verified decompressed bytes, downloading if allowed.
    A ``data_dir`` that does not exist is an error unless ``create`` (``fetch``): a mistyped
    folder is not made and filled behind the user's back."""
    if data_dir is not None and str(data_dir) != "" and not create and not Path(data_dir).expanduser().is_dir():
        raise InitlabError(
            f"--data-dir {data_dir}: no such folder (`initlab data fetch --data-dir {data_dir}` "
            "downloads MNIST into it)"
        )
    found = locate(data_dir)
    if found is not None:
        return next(iter(found.values())).parent, {
            name: verify_file(path, keep_copy=True) for name, path in found.items()
        }

    searched = candidate_dirs(data_dir)
    if not download:
        raise InitlabError(
            f"MNIST not found: looked for {', '.join(FILES)} (or .gz) in {', '.join(map(str, searched))}; "
            f"run `initlab data fetch`, or pass --data-dir / set {DATA_DIR_ENV} to a folder holding all four"
        )

    target = searched[0]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InitlabError(
            f"cannot create {target} ({exc.strerror or exc}); pass --data-dir or set {DATA_DIR_ENV} to a "
            "writable folder"
        ) from None

    present = files_in(target)
    # Verify what is already there first: no point downloading 10 MB only to fail on a bad local file.
    data = {name: verify_file(path) for name, path in present.items()}
    bases = tuple(bases) if bases else mirror_urls()
    console = Console(stderr=True)  # stdout stays clean for the command's own output
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    # A live bar only, gone when the files are in (the caller says so) or the download failed (the
    # error says why): a log file gets neither bars nor the blank line an empty one leaves.
    with Progress(*columns, console=console, disable=not (progress and console.is_terminal), transient=True) as bar:
        for spec in FILES.values():
            if spec.name not in data:
                data[spec.name] = _download(spec, target, bases, bar)
    return target, {name: data[name] for name in FILES}


def fetch(
    data_dir: str | Path | None = None, *, progress: bool = True, mirrors: tuple[str, ...] | list[str] | None = None
) -> Path:
    """Make sure the four MNIST files (LeCun et al. 1998) are present and verified; return their folder.

    If no candidate folder (see ``candidate_dirs``) holds all four, the missing ``NAME.gz`` files
    are downloaded from ``mirrors`` (default: ``mirror_urls()``), in order with fallback, into
    ``data_dir`` or ``$INITLAB_DATA_DIR`` if set, else ``cache_dir()``. Each download is checked
    against the SHA-256 of its decompressed bytes before it is renamed into place. Raises
    ``InitlabError`` if a file is corrupt or every mirror fails.
    """
    directory, _ = _acquire(
        data_dir, download=True, progress=progress, bases=tuple(mirrors) if mirrors else None, create=True
    )
    return directory


def load(data_dir: str | Path | None = None, *, download: bool = True, progress: bool = True) -> MnistArrays:
    """Return MNIST (LeCun et al. 1998) as uint8 arrays, after verifying every file's SHA-256.

    Looks in ``candidate_dirs(data_dir)``; if the files are nowhere and ``download`` is true,
    fetches them first (see ``fetch``). Each file is decompressed once; the same bytes are hashed
    and parsed. The arrays are read-only views of those bytes. Raises ``InitlabError`` naming
    the file for anything missing, truncated or corrupted.
    """
    _, data = _acquire(data_dir, download=download, progress=progress, bases=None)
    arrays = {name: read_idx(raw, name=name) for name, raw in data.items()}
    return MnistArrays(
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=arrays["train-labels-idx1-ubyte"],
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=arrays["t10k-labels-idx1-ubyte"],
    )


# --------------------------------------------------------------------------- IDX format


def read_idx(raw: bytes, *, name: str = "IDX data") -> np.ndarray:
    """Parse one IDX file (LeCun et al. 1998) into a uint8 array of the shape its header declares.

    Layout (big-endian): two zero bytes, a type byte (only 0x08, unsigned byte, is accepted), the
    number of dimensions, one 4-byte size per dimension, then the data row-major. The data length
    must match the sizes exactly. Returns a read-only view of ``raw`` when ``raw`` is ``bytes``.
    Raises ``InitlabError`` mentioning ``name`` on any violation.
    """
    if len(raw) < 4:
        raise InitlabError(f"{name}: not an IDX file (only {len(raw)} bytes, the header needs at least 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise InitlabError(f"{name}: not an IDX file (magic starts {raw[:2].hex()}, expected 0000)")
    if raw[2] != 0x08:
        raise InitlabError(f"{name}: IDX type byte 0x{raw[2]:02x} is not supported (only 0x08, unsigned byte)")
    ndim = raw[3]
    if ndim == 0:
        raise InitlabError(f"{name}: IDX header declares no dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InitlabError(f"{name}: IDX header truncated ({len(raw)} bytes, {ndim} dimensions need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count:
        raise InitlabError(
            f"{name}: IDX data length mismatch: header declares {shape} = {count:,} bytes, found {len(raw) - header:,}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(shape)
