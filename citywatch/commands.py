"""What the command modules share: a handler bound to the settings its invocation names.

Each command module (``officers``, ``silences``, ``devices``, ``gateways``, ...) registers
handlers of ``(args, settings)``; the CLI gives it ``settings_of(args)`` -- the settings file
and environment that invocation names -- and ``binder`` turns one into the other.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from foundation.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]
"""A command: its parsed arguments and the settings they resolve to; the exit code."""


def binder(
    settings_of: Callable[[argparse.Namespace], Settings],
) -> Callable[[Handler], Callable[[argparse.Namespace], int]]:
    """``bind = binder(settings_of)``; ``parser.set_defaults(func=bind(cmd_list))``."""

    def bind(handler: Handler) -> Callable[[argparse.Namespace], int]:
        return lambda args: handler(args, settings_of(args))

    return bind
