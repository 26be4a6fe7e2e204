"""What the reports write, made safe to open: CSV cells, file names, all-or-nothing output.

The files go to the finance office, who open them in Excel or WPS and copy
them between machines, so three things are decided here, once, for every
report (docs/reports.md, "Files the finance office can open safely"):

* **CSV cells are never formulas.** A unit name, an address or an officer's
  note is text written by someone else; a cell starting with ``=``, ``+``,
  ``-``, ``@``, TAB or CR would be run by a spreadsheet as a formula
  (``=HYPERLINK(...)``, ``@SUM(...)``, DDE). As the OWASP "CSV Injection"
  guidance recommends, such a text cell gets a leading ``'``, which the
  spreadsheet shows as text. Only ``str`` values are neutralised: numbers
  (``int``, ``float``, ``Decimal``) are written as numbers, so a reversal's
  ``-10000`` stays a negative number. Writers therefore pass numbers as
  numbers, never pre-formatted as strings (``decimal_text`` keeps a fixed
  number of decimals and stays a number).
* **One file per payer, whatever its name.** A payer's name becomes a file
  name component verbatim only when it is *plain*: nothing a file system or
  another operating system would change or refuse (path separators,
  ``\\:*?"<>|``, white space, control and format characters, a leading dot),
  already NFC and lower case where case exists (so it stays distinct on the
  case-insensitive, normalising file systems of Windows and macOS), short
  enough, and not ending like a hash suffix. Any other name is shortened and
  cleaned and gets ``-`` plus the first 8 hex digits of the SHA-256 of the
  full name: the same payer gets the same file name every month, and two
  names that clean up alike ("A/B", "A B") still get two files.
* **All or nothing.** ``Output`` checks every path of a report before the
  first byte is written (distinct even where case and Unicode normalisation
  are ignored, within the file system's name and path limits, the directory
  writable), writes each file under a temporary name beside its target and
  renames them into place only when every file was written; a failure
  removes the temporary files and leaves the directory as it was.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from foundation.errors import CitywatchError

__all__ = [
    "FORMULA_PREFIXES",
    "MAX_COMPONENT_BYTES",
    "Output",
    "csv_cell",
    "decimal_text",
    "file_component",
    "write_csv",
]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection")."""

MAX_COMPONENT_BYTES = 96
"""A name used verbatim in a file name is at most this many UTF-8 bytes (a Chinese character
is 3), so ``settlement-2026-10-property_unit-<name>.pdf`` stays far below the 255 bytes
of a file name on ext4, NTFS and APFS."""
_PREFIX_BYTES = MAX_COMPONENT_BYTES - 9  # room for "-" and 8 hex digits
_UNSAFE = re.compile(r'[\\/:*?"<>|]')
_HASH_TAIL = re.compile(r"-[0-9a-f]{8}$")


def csv_cell(value: Any) -> Any:
    """The value as a CSV cell that a spreadsheet shows and never runs (see the module doc).

    Text starting with ``= + - @`` TAB or CR gets a leading ``'``; every other
    value (numbers included, a negative amount too) is returned unchanged.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def decimal_text(value: float | None, digits: int = 2) -> Decimal | str:
    """A number with ``digits`` decimals that the CSV writes as a number (``-2.50``); ``""`` for None.

    A ``Decimal`` prints exactly the digits it was made with, and being a
    number it is not neutralised by ``csv_cell`` (a string ``"-2.50"`` would be).
    """
    return "" if value is None else Decimal(f"{value:.{digits}f}")


def write_csv(
    path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Write a report CSV: UTF-8 with BOM (Excel opens Chinese correctly), every cell through ``csv_cell``."""
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow([csv_cell(h) for h in header])
        for row in rows:
            w.writerow([csv_cell(c) for c in row])


def _plain_char(ch: str) -> bool:
    return not (_UNSAFE.match(ch) or ch.isspace() or unicodedata.category(ch).startswith("C"))


def _is_plain(name: str) -> bool:
    return (
        bool(name)
        and not name.startswith(".")
        and len(name.encode("utf-8")) <= MAX_COMPONENT_BYTES
        and all(_plain_char(ch) for ch in name)
        and name == unicodedata.normalize("NFC", name)
        and name == name.casefold()
        and not _HASH_TAIL.search(name)
    )


def file_component(name: str) -> str:
    """``name`` as one part of a file name, distinct for distinct names (see the module doc).

    A plain name is returned as is (``郑州供电公司``, ``erqi``); any other is
    cleaned (runs of unsafe characters become ``_``), cut to fit and suffixed
    with ``-`` and 8 hex digits of the SHA-256 of the full name.
    """
    if _is_plain(name):
        return name
    cleaned = "".join(ch if _plain_char(ch) else "_" for ch in unicodedata.normalize("NFC", name))
    cleaned = re.sub(r"_+", "_", cleaned).strip("._")
    out = ""
    for ch in cleaned:  # cut on a character boundary, by UTF-8 bytes
        if len((out + ch).encode("utf-8")) > _PREFIX_BYTES:
            break
        out += ch
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{out.rstrip('._') or 'payer'}-{digest}"


def _limit(directory: Path, what: str, default: int) -> int:
    try:
        return int(os.pathconf(directory, what))
    except (OSError, ValueError, AttributeError):
        return default


class Output:
    """The files of one report, checked before and renamed into place after they are written.

    ``Output(dir, names)`` validates (raises ``CitywatchError`` naming the file
    and the fix, before anything is written); ``with out.writing() as paths``
    gives a temporary path per name, in order, to write to; on a clean exit
    they are renamed to their names, on an exception removed.
    """

    def __init__(self, directory: str | os.PathLike[str], names: Sequence[str]) -> None:
        self.directory = Path(directory)
        self.names = list(names)
        self.paths = [self.directory / n for n in self.names]
        self._check()

    def _check(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CitywatchError(
                f"cannot create the report directory {str(self.directory)!r}: "
                f"{exc.strerror or exc}; choose another --out"
            ) from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise CitywatchError(
                f"cannot write into {str(self.directory)!r} (permission denied); choose another --out"
            )
        name_max = _limit(self.directory, "PC_NAME_MAX", 255)
        path_max = _limit(self.directory, "PC_PATH_MAX", 4096)
        seen: dict[str, str] = {}
        for name, path in zip(self.names, self.paths, strict=True):
            if "/" in name or os.sep in name or name in ("", ".", ".."):
                raise CitywatchError(f"report file name {name!r} is not a plain file name (a bug)")
            if len(name.encode("utf-8")) > name_max:
                raise CitywatchError(
                    f"report file name {name!r} is {len(name.encode('utf-8'))} bytes, over this file "
                    f"system's {name_max} (a bug: names are shortened by file_component)"
                )
            full = len(os.fsencode(path.absolute()))
            if full >= path_max:
                raise CitywatchError(
                    f"report path {str(path)!r} is {full} bytes, over this system's {path_max}; "
                    "choose a shorter --out"
                )
            key = unicodedata.normalize("NFC", name).casefold()
            if key in seen:
                raise CitywatchError(
                    f"two report files would share the name {name!r} ({seen[key]!r}); "
                    "a bug in the file naming, please report it"
                )
            seen[key] = name
            if path.is_dir():
                raise CitywatchError(
                    f"{str(path)!r} is a directory; remove it or choose another --out"
                )

    @contextmanager
    def writing(self) -> Iterator[list[Path]]:
        """Temporary paths (short names, hidden) to write to; renamed into place on success."""
        token = uuid.uuid4().hex[:12]
        temps = [self.directory / f".cw-{token}-{i}.tmp" for i in range(len(self.paths))]
        try:
            yield temps
            for tmp in temps:
                if not tmp.exists():
                    raise CitywatchError(f"report file {tmp.name} was not written (a bug)")
            for tmp, path in zip(temps, self.paths, strict=True):
                os.replace(tmp, path)
        finally:
            for tmp in temps:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
