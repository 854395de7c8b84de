"""Durable file writes: readers see the old file or the new one, never a part."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

TEMP_SUFFIX = ".tmp"


def cache_dir() -> Path:
    """sagan-cli's cache folder: $SAGAN_CACHE_DIR, else ~/.cache/sagan-cli (not created here)."""
    return Path(os.environ.get("SAGAN_CACHE_DIR") or Path.home() / ".cache" / "sagan-cli")


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(handle)`` on a temp file, fsync it and rename it over ``path``.

    Readers see the old file or the new one, never a part, even after a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results follow the umask
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
    except BaseException as exc:
        # a writer that reports a failed write its own way (torch.save: "enforce fail ...
        # unexpected pos") failed for lack of room when the file hit the size limit or the disk
        # is full: an OSError like any other write then, which every caller explains
        no_room = _no_room(Path(tmp), path) if isinstance(exc, Exception) else None
        Path(tmp).unlink(missing_ok=True)
        if no_room is not None:
            raise no_room from exc
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


MIN_FREE = 2**20  # a disk with less free space than this counts as full


def _no_room(tmp: Path, path: Path) -> OSError | None:
    """Why a write to ``tmp`` (for ``path``) failed for lack of room, if it did: the file reached
    the process's file-size limit, or the disk is full."""
    try:
        size = tmp.stat().st_size
    except OSError:
        size = 0
    limit = _file_size_limit()
    if limit is not None and size >= limit:
        return OSError(
            errno.EFBIG, f"File too large (the file-size limit, {limit:,} bytes)", str(path)
        )
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    if free < MIN_FREE:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    return None


def _file_size_limit() -> int | None:
    """This process's file-size limit in bytes (``ulimit -f``), None when unlimited."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


@cache
def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: once, at the first write
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temp files a killed writer left under ``folder`` (call while holding its lock)."""
    stale = [p for p in folder.rglob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def fresh_path(path: Path) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext``... if taken: outputs never replace older ones."""
    candidate, counter = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{counter}{path.suffix}")
        counter += 1
    return candidate
