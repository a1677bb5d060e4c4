"""A per-user on-disk cache of the bundled library's parse, so a process does not reparse it.

The bundled library (specs/lib, which nearly every spec imports) is parsed in ~25 ms a
command; `parse_cached` keeps its AST as JSON (one entry per file, keyed by the text, the
grammar and syntax.py's source), decoded in ~2 ms into AST classes only.

(The parser itself needs no cache: it is generated ahead of time, tables included, into
`fractalc.lang._parser_generated` by scripts/gen_parser.py. This module cached lark's built
tables before that.)

- Key: sha256 of a format number, the caller's salt (syntax.py's source and the grammar's
  sha256), the file name and its text. A changed text, grammar or AST class is a different
  key; nothing stale is ever read.
- Place: ``$FRACTALC_CACHE_DIR``, else ``$XDG_CACHE_HOME/fractalc``, else
  ``~/.cache/fractalc``; created with mode 0700. The folder must be a real directory (not a
  symlink) owned by the current user and not writable by others, and the file a regular file
  owned by the user and writable by nobody else; otherwise the cache is not used.
- Entries are JSON decoded into AST classes only (never pickles): a foreign file could at worst
  change a parse, and is refused before that by the ownership checks.
- Writing is atomic (a temporary file in the folder, then a rename). Any failure to read
  (missing, truncated, corrupt, foreign) means "parse and rewrite"; any failure to write means
  "no cache". ``FRACTALC_NO_PARSER_CACHE=1`` turns the cache off.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

from fractalc.fileio import sha256

FORMAT = 1
_MAGIC = b"fractalc-parser-cache "
_MAX_BYTES = 8 << 20  # the library's ASTs are a few hundred kB; anything huge is not ours


def cache_dir() -> Path | None:
    """The cache folder (not created), or None when the cache is turned off."""
    if os.environ.get("FRACTALC_NO_PARSER_CACHE"):
        return None
    explicit = os.environ.get("FRACTALC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is to be ignored
        return Path(xdg) / "fractalc"
    try:
        return Path.home() / ".cache" / "fractalc"
    except (RuntimeError, KeyError):  # no home directory to be found: no cache
        return None


def _private_dir(path: Path) -> bool:
    """Make `path` (mode 0700) if missing; True when it is a directory only we can write."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return False
    if st.st_mode & 0o022:  # ours but writable by others: tighten it rather than trust it
        try:
            os.chmod(path, 0o700)
        except OSError:
            return False
    return True


def _read_entry(path: Path, key: str) -> bytes | None:
    """The body stored under `key` at `path` (after its header line), or None when the file is
    absent, not ours, writable by others, too large, or written for another key."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022
                or st.st_size > _MAX_BYTES):
            return None
        data = f.read(_MAX_BYTES + 1)
    header = _MAGIC + key.encode() + b"\n"
    if not data.startswith(header):
        return None
    return data[len(header):]


def _write(folder: Path, path: Path, key: str, body: bytes) -> None:
    import tempfile
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + key.encode() + b"\n" + body)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _ast_key(file: str, text: str, salt: bytes) -> str:
    parts = [f"ast format {FORMAT}".encode(), salt, file.encode(), text.encode()]
    return sha256(b"\0".join(parts)).hexdigest()


def parse_cached(file: str, text: str, parse: Callable[[], object], *, salt: Callable[[], bytes],
                 encode: Callable[[object], object], decode: Callable[[object, str], object]):
    """The `syntax.Module` of `text` (named `file`): from the cache when a trusted entry for
    this exact text, grammar and syntax.py exists, else `parse()` (then stored, replacing the
    entries of older texts of `file`, so the cache holds one entry per file).

    Meant for the bundled library, which nearly every spec imports: parsing it is most of
    a short command's parse time. Entries are JSON (`syntax.ast_to_data`), decoded into AST
    classes only, so a foreign file could at worst change a parse, and is refused before
    that by the ownership checks of `_read_entry`.

    The caller (`syntax`, which this module does not import) gives ``salt()``: bytes that
    change with the grammar and the AST classes (an `OSError` from it means: no cache), and
    ``encode``/``decode`` between a module and plain JSON data."""
    folder = cache_dir()
    if folder is None or not _private_dir(folder):
        return parse()
    try:
        key = _ast_key(file, text, salt())
    except OSError:  # syntax.py not readable (a bytecode-only install): no cache
        return parse()
    stem = "ast-" + sha256(file.encode()).hexdigest()[:16]
    path = folder / f"{stem}-{key[:40]}.json"
    body = _read_entry(path, key)
    if body is not None:
        try:
            import json
            return decode(json.loads(body), file)
        except Exception:  # corrupt or from an older format: parse and rewrite
            pass
    module = parse()
    try:
        import json
        body = json.dumps(encode(module), separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        return module
    for old in folder.glob(f"{stem}-*.json"):
        if old != path:
            try:
                old.unlink()
            except OSError:
                pass
    _write(folder, path, key, body)
    return module
