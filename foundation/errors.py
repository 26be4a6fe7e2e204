"""Errors a person can act on.

Every mistake in a file a city edits (settings, device registry, rules,
routing) is reported as a ``ConfigError`` that names the file, the line (and
column when known) and what is wrong, so the CLI can print one line and exit
instead of a traceback.
"""

from __future__ import annotations


class CitywatchError(Exception):
    """Base of every error the CLI reports as a one-line message (exit code 2)."""


class ConfigError(CitywatchError):
    """A mistake in a configuration, registry or rules file.

    ``str()`` gives ``file:line:column: message`` (line/column omitted when
    unknown), the format editors and CI logs turn into links.
    """

    def __init__(self, file: str | None, line: int | None, message: str, column: int | None = None):
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


def read_config_text(path: object, what: str) -> tuple[str, str]:
    """(file name, text) of a UTF-8 file a city edits; ``ConfigError`` naming ``what`` otherwise.

    A BOM (left by Windows editors) is accepted; anything not UTF-8 is refused
    with the fix, not decoded by guesswork.
    """
    import os

    name = os.fspath(path)  # type: ignore[arg-type]
    try:
        with open(name, encoding="utf-8-sig") as f:
            return name, f.read()
    except OSError as exc:
        raise ConfigError(name, None, f"cannot read the {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(name, None, f"the {what} is not UTF-8; save it as UTF-8") from None
