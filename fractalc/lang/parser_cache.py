"""A per-user on-disk cache of the built LALR parser (and of the bundled library's parse), so
a process does not rebuild them.

Building the strict LALR parser from ``grammars/fractal.lark`` costs 0.2-0.4 s (most of it
lark's strict regex-collision check); loading the built tables costs a few milliseconds. Short
commands (`fractalc check`, `stats`) are dominated by that difference.

Why a cache rather than lark's standalone generator: the standalone module is a second copy of
lark's runtime (its own Token, Tree, Transformer and exception classes), so the AST transformer,
the syntax-error messages and the formatter's comment-keeping lexer would have to be written
against two APIs, and a generated file checked into the tree can silently go stale when the
grammar changes. Lark's own ``cache=`` option is not used either: it writes in place (a reader
can see half a file), by default into the shared temp directory, and unpickles whatever it
finds there. This module uses lark's public ``Lark.save`` / ``Lark.load`` instead:

- Key: sha256 of the grammar text, the parser options, lark's version, Python's version and a
  format number (`cache_key`). A changed grammar is a different key, hence a different file;
  nothing stale is ever read.
- Place: ``$FRACTALC_CACHE_DIR``, else ``$XDG_CACHE_HOME/fractalc``, else
  ``~/.cache/fractalc``; created with mode 0700. The folder must be a real directory (not a
  symlink) owned by the current user and not writable by others, and the file a regular file
  owned by the user and writable by nobody else; otherwise the cache is not used.
- Reading is not a code-execution vector even so: the bytes are first unpickled by an
  unpickler that refuses every global (lark saves plain dicts, lists, strings and numbers), and
  only bytes that pass are handed to ``Lark.load``.
- Writing is atomic (a temporary file in the folder, then a rename). Any failure to read
  (missing, truncated, corrupt, foreign) means "build and rewrite"; any failure to write means
  "no cache". ``FRACTALC_NO_PARSER_CACHE=1`` turns the cache off.

The bundled library (specs/lib, which nearly every spec imports) is parsed in ~25 ms a
command; `parse_cached` keeps its AST as JSON (one entry per file, keyed by the text, the
grammar and syntax.py's source), decoded in ~2 ms into AST classes only.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import stat
import sys
from pathlib import Path
from typing import Callable

FORMAT = 1
_MAGIC = b"fractalc-parser-cache "
_MAX_BYTES = 8 << 20  # the grammar's tables are ~40 kB; anything huge is not ours


def cache_key(grammar: str, options: dict, lark_version: str) -> str:
    """The hex key of a parser built from `grammar` with `options` by lark `lark_version`."""
    text = "\0".join([f"format {FORMAT}", grammar, repr(sorted(options.items())), lark_version,
                      "%d.%d" % sys.version_info[:2]])
    return hashlib.sha256(text.encode()).hexdigest()


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


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference is an error."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def _read(path: Path, key: str) -> bytes | None:
    """The pickled parser stored under `key` at `path`, or None when absent or not trusted."""
    body = _read_entry(path, key)
    if body is None:
        return None
    try:
        doc = _PlainUnpickler(io.BytesIO(body)).load()
    except Exception:  # truncated or corrupt: any error means "not usable"
        return None
    if not (isinstance(doc, dict) and set(doc) == {"data", "memo"}):
        return None
    return body


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


def load_or_build(grammar: str, options: dict, build: Callable[[], object]):
    """The lark parser for `grammar` and `options`: from the cache when a trusted entry exists,
    else `build()` (whose result is then stored). Never raises because of the cache."""
    import lark

    folder = cache_dir()
    if folder is None or not _private_dir(folder):
        return build()
    key = cache_key(grammar, options, lark.__version__)
    path = folder / f"parser-{key[:40]}.pickle"
    body = _read(path, key)
    if body is not None:
        try:
            return lark.Lark.load(io.BytesIO(body))
        except Exception:  # a lark that reads its own format differently: rebuild below
            pass
    parser = build()
    buf = io.BytesIO()
    try:
        parser.save(buf)
    except Exception:
        return parser
    _write(folder, path, key, buf.getvalue())
    return parser


def _ast_key(file: str, text: str, salt: bytes) -> str:
    parts = [f"ast format {FORMAT}".encode(), salt, file.encode(), text.encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def parse_cached(file: str, text: str, parse: Callable[[], object], *, salt: Callable[[], bytes],
                 encode: Callable[[object], object], decode: Callable[[object, str], object]):
    """The `syntax.Module` of `text` (named `file`): from the cache when a trusted entry for
    this exact text, grammar and syntax.py exists, else `parse()` (then stored, replacing the
    entries of older texts of `file`, so the cache holds one entry per file).

    Meant for the bundled library, which nearly every spec imports: parsing it is most of
    a short command's parse time. Entries are JSON (`syntax.ast_to_data`), decoded into AST
    classes only, so a foreign file could at worst change a parse, and is refused before
    that by the same ownership checks as the parser's.

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
    stem = "ast-" + hashlib.sha256(file.encode()).hexdigest()[:16]
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
