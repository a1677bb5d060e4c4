"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or a refused input never leaves a half-written artifact, and an existing file is
replaced in one step. The replacement keeps what the user set up for the target:

- the permission bits of an existing target (a 0600 file stays 0600); a new file gets
  ``0o666 & ~umask``, as ``open(path, "w")`` would give it;
- a symlink stays a symlink: the write goes to the file the link points to (the temporary file
  is made in that file's folder, so the rename stays on one file system).

The temporary file is ``.{name}.{pid}.{random}.tmp`` in the target's folder. It is removed on
any failure, KeyboardInterrupt included, and on SIGTERM while a write is in progress (the
handler is installed only for the duration of the write, in the main thread). A writer killed
with SIGKILL cannot clean up: the next write to the same target removes that target's stale
temporary files, those whose writer pid is no longer alive or that are older than a minute.
"""
from __future__ import annotations

import os
import re
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import FractalcError

STALE_AFTER_S = 60.0  # a temporary file this old belongs to no write in progress

# signal and tempfile are imported where a write needs them: a command that writes nothing
# (`check`) does not pay for them (tempfile alone pulls in shutil, random and the compressors).


def sha256(data: bytes = b""):
    """A new sha256 hash object of `data` (hashlib's interface and digests). Python's own C
    implementation is loaded directly where it has one (``_sha256``; ``_sha2`` from 3.12):
    importing hashlib loads OpenSSL, ~3 ms of a short command's start-up."""
    try:
        from _sha256 import sha256 as make
    except ImportError:
        try:
            from _sha2 import sha256 as make
        except ImportError:
            from hashlib import sha256 as make
    return make(data)


def _umask() -> int:
    try:  # Linux >= 4.7 reports it: reading it there changes nothing, even for a moment
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # elsewhere os.umask can only be read by setting it; set it back at once
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Remove temporary files of earlier writes to `parent/name` whose writer is gone."""
    pat = re.compile(r"\." + re.escape(name) + r"\.(\d+)\.[^.]+\.tmp")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    now = time.time()
    for e in entries:
        m = pat.fullmatch(e.name)
        if m is None:
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            if not _pid_alive(int(m.group(1))) or now - st.st_mtime > STALE_AFTER_S:
                os.unlink(e.path)
        except (OSError, ValueError):
            pass  # another writer removed it first, or it is not ours to remove


@contextmanager
def unlink_on_sigterm(tmp: str):
    """While the block runs, a SIGTERM that would end the process removes `tmp` first."""
    import signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    if previous is None or previous == signal.SIG_IGN:  # ignored, or a handler Python cannot
        # restore (installed outside Python): leave SIGTERM alone
        yield
        return

    def handler(signum, frame):
        if callable(previous):  # the program's own handler decides; an exception it raises
            previous(signum, frame)  # unwinds through atomic_write, which removes tmp
            return
        try:
            os.unlink(tmp)
        except OSError:
            pass
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # the default action, now that tmp is gone

    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not allowed here (an embedding interpreter): no handler
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _target(path: Path) -> Path:
    """The file a write to `path` should replace: `path` itself, or what its symlink(s) name."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=False))
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise FractalcError(f"cannot write {str(path)!r}: {exc}") from None


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replace the file at `path` with `data` (str is written as UTF-8) in one rename.

    Keeps the mode of an existing target and writes through symlinks (see the module doc).
    Raises `FractalcError` when the folder does not exist, the target is not a regular file
    (a directory, a FIFO, a device), or the write fails.
    """
    shown = str(path)
    path = _target(Path(path))
    if isinstance(data, str):
        data = data.encode()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FractalcError(f"cannot write {shown!r}: directory {str(parent)!r} does not exist")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    except OSError as exc:
        raise FractalcError(f"cannot write {shown!r}: {exc.strerror}") from None
    else:
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise FractalcError(f"cannot write {shown!r}: it is {what}")
        mode = stat.S_IMODE(st.st_mode)
    _remove_stale(parent, path.name)
    import tempfile
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise FractalcError(f"cannot write {shown!r}: {exc.strerror}") from None
    try:
        with unlink_on_sigterm(tmp):
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise FractalcError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
        raise


# ----------------------------------------------------------------------------- reading inputs


class FileRefused(FractalcError):
    """An input path that is not a readable regular file of acceptable size. `reason` says
    why in a few words ("it is a directory"); callers prefix what they were reading."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{str(path)!r}: {reason}")
        self.reason = reason


# Pseudo file systems: their "regular files" report size 0 and produce process state
# (/proc/self/environ, /proc/self/mem, /sys/...), never user data.
_PSEUDO_ROOTS = ("/proc", "/sys")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "it is a directory"
    if stat.S_ISFIFO(mode):
        return "it is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "it is a socket, not a regular file"
    return "it is not a regular file"


def read_limited(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them.

    Never blocks on a FIFO and never reads a device or a /proc or /sys file: those, directories,
    missing files and files over `limit` bytes raise `FileRefused` with the reason.
    """
    path = Path(path)
    real = os.path.realpath(path)
    for root in _PSEUDO_ROOTS:
        if real == root or real.startswith(root + "/"):
            raise FileRefused(path, f"it is a {root} file (process state), not a regular file")
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait (regular files ignore it)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileRefused(path, "no such file") from None
    except IsADirectoryError:
        raise FileRefused(path, "it is a directory") from None
    except OSError as exc:
        raise FileRefused(path, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(path, _kind(st.st_mode))
        if st.st_size > limit:
            raise FileRefused(path, f"it is {st.st_size:,} bytes, more than the {limit:,} allowed")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while being read
                raise FileRefused(path, f"it is more than the {limit:,} bytes allowed")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
