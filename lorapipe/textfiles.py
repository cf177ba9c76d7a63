"""Reading the user's text files (inputs, rows, pipeline.yaml): UTF-8, bounded lines, one-line errors.

lorapipe reads text as UTF-8 (a UTF-8 byte-order mark is accepted). A file in another encoding is
not guessed at: its first bad line is named with the file, the line, the byte and the encoding it
looks like, so the fix (re-save as UTF-8) is obvious. Lines are read with a cap
(``data.max_line_bytes``): a longer one is skipped in bounded memory and reported, so a stray
20 MB line costs neither gigabytes of memory nor a traceback.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from lorapipe.errors import DataError, LorapipeError

DEFAULT_MAX_LINE_BYTES = 1 << 20
_CHUNK = 1 << 20


def utf16_name(head: bytes) -> str | None:
    """``UTF-16`` (with its byte order) when the first bytes of a file say so: a BOM, or ASCII
    interleaved with NUL bytes as UTF-16 text without a BOM starts; None otherwise."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16 (with a byte-order mark)"
    if len(head) >= 4 and head[1] == 0 and head[3] == 0 and head[0] and head[2]:
        return "UTF-16 little-endian"
    if len(head) >= 4 and head[0] == 0 and head[2] == 0 and head[1] and head[3]:
        return "UTF-16 big-endian"
    return None


def utf8_problem(line: bytes, start: int) -> str:
    """Why ``line`` is not UTF-8 from byte ``start`` on: the byte, its column and the likely encoding."""
    bad = line[start:start + 1]
    column = len(line[:start].decode("utf-8", errors="replace")) + 1
    try:
        guess = f"Latin-1/Windows-1252, where it is `{bad.decode('cp1252')}`"
    except UnicodeDecodeError:
        guess = "another encoding"
    return (f"not UTF-8: byte 0x{bad.hex()} at column {column} (the file looks like {guess}); "
            "re-save it as UTF-8")


def _utf16_message(path: Path, encoding: str) -> str:
    return (f"{path}: the file is {encoding}; lorapipe reads UTF-8. Convert it, e.g. "
            f"`iconv -f UTF-16 -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}`")


def read_lines(path: str | Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
               ) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield ``(line number, text, None)`` for each line of a UTF-8 file (line ending kept), or
    ``(line number, None, problem)`` for a line that is not UTF-8 or longer than ``max_line_bytes``.

    A too-long line is skipped chunk by chunk, never held whole. A UTF-16 file raises
    :class:`DataError` at once (every line of it would be wrong).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if encoding := utf16_name(head):
            raise DataError(_utf16_message(path, encoding))
        f.seek(len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0)
        n = 0
        while raw := f.readline(max_line_bytes + 1):
            n += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                size = len(raw)
                while chunk := f.readline(_CHUNK):
                    size += len(chunk)
                    if chunk.endswith(b"\n"):
                        break
                yield n, None, (f"line is {size:,} bytes, more than data.max_line_bytes ({max_line_bytes:,}); "
                                "shorten or drop it, or raise data.max_line_bytes")
                continue
            try:
                yield n, raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                yield n, None, utf8_problem(raw, e.start)


def read_text(path: str | Path, error: type[LorapipeError] = DataError) -> str:
    """The whole of a small UTF-8 file (a config), or ``error`` naming the file, line and encoding."""
    path = Path(path)
    raw = path.read_bytes()
    if encoding := utf16_name(raw[:4]):
        raise error(_utf16_message(path, encoding))
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = raw.rfind(b"\n", 0, e.start) + 1
        end = raw.find(b"\n", e.start)
        line = raw[start:end if end >= 0 else len(raw)]
        lineno = raw.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{lineno}: {utf8_problem(line, e.start - start)}") from None
