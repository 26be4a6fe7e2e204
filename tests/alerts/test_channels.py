"""alerts/channels/__init__.py: the one registration table ``CHANNELS``, checked for every registered type.

A new channel needs no edit here: it is found in the table, its section of
docs/alerts.md is read back (every option named, its example loads and
builds), and its entry in the routing file is read from its ``OPTIONS`` alone.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest

import alerts.channels
from alerts.channels import CHANNELS, make_channel
from alerts.channels.plugin import OPTION_KINDS, Option
from alerts.route import parse_routes
from foundation.errors import ConfigError
from tests.alerts.standins import run

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
TYPES = list(CHANNELS)

GOOD = {"text": "x", "url": "https://example.org/send", "address": "a@example.org", "addresses": ["a@example.org"],
        "whole": 5, "flag": True, "duration": "3s", "headers": {"X-A": "b"}}  # fmt: skip
"""A valid value of each kind of option."""
BAD = {"text": True, "url": "ftp://example.org", "address": "nobody", "addresses": ["nobody"], "whole": 0,
       "flag": "maybe", "duration": 30, "headers": ["X-A"]}  # fmt: skip
"""An invalid one (a duration without its unit; a whole number under every option's minimum)."""
SECRET = "?TOPSECRET-" + "s" * 32
"""Appended to a secret option's value: long enough for an HMAC key (at least 32 bytes)."""


def section(ctype: str) -> str:
    m = re.search(rf"^#### `{re.escape(ctype)}`\n(.*?)(?=^#{{1,4}} |\Z)", DOCS, re.S | re.M)
    assert m, (
        f"docs/alerts.md has no section '#### `{ctype}`' (docs/extending.md#adding-an-alert-channel)"
    )
    return m.group(1)


def receiver(entry: str) -> str:
    """A routing file with one receiver ``r`` whose channel entry is ``entry`` (``type: {...}``)."""
    lines = entry.strip("\n").split("\n")
    return (
        "receivers:\n  - name: r\n"
        + "".join(f"    {line}\n" for line in lines)
        + "route: {receiver: r}\n"
    )


def minimal(ctype: str, **given: object) -> str:
    """An entry with the required options only (``given``: more, or ``None`` to leave one out)."""
    opts = {o.name: GOOD[o.kind] for o in CHANNELS[ctype].OPTIONS if o.required}
    opts.update(given)
    return receiver(f"{ctype}: {json.dumps({k: v for k, v in opts.items() if v is not None})}")


def test_every_channel_module_is_registered_once() -> None:
    declared = {}
    for info in pkgutil.iter_modules(alerts.channels.__path__):
        module = importlib.import_module(f"alerts.channels.{info.name}")
        if hasattr(module, "TYPE"):
            declared[module.TYPE] = module
    assert (
        declared == CHANNELS
    )  # a module that declares a TYPE and is missing from the table is a forgotten line
    for ctype, module in CHANNELS.items():
        names = [o.name for o in module.OPTIONS]
        assert all(isinstance(o, Option) for o in module.OPTIONS) and len(set(names)) == len(
            names
        ), ctype
        assert set(module.TARGET) <= {
            o.name for o in module.OPTIONS if o.required or o.default is not None
        }, ctype


@pytest.mark.parametrize("ctype", TYPES)
def test_every_channel_has_its_section_in_docs_alerts_md(
    ctype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = section(ctype)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}
    for o in CHANNELS[ctype].OPTIONS:
        assert o.name in rows, f"docs/alerts.md#{ctype} does not list the key {o.name!r}"
        row = rows[o.name]
        assert ("required" in row) == o.required, f"{ctype}.{o.name}: required? {o.required}"
        assert ("secret" in row) == o.secret, f"{ctype}.{o.name}: secret? {o.secret}"
        if o.default is not None:
            assert str(o.default).lower() in row, f"{ctype}.{o.name}: default {o.default}"
    assert set(rows) == {o.name for o in CHANNELS[ctype].OPTIONS}, (
        "the docs list keys the module does not take"
    )
    examples = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert examples, f"docs/alerts.md#{ctype} has no example entry"
    for example in examples:
        for var in re.findall(r"\$\{(\w+)\}", example):
            monkeypatch.setenv(var, f"value-of-{var}-{'x' * 32}")  # secrets of a safe length
        (spec,) = parse_routes(receiver(example), f"docs/alerts.md#{ctype}").receivers["r"].channels
        assert spec.type == ctype and spec.target.startswith(ctype)
        channel = make_channel(spec)
        assert channel.type == ctype
        run(channel.close())


@pytest.mark.parametrize("ctype", TYPES)
def test_an_entry_is_read_from_the_modules_options(ctype: str) -> None:
    schema = CHANNELS[ctype].OPTIONS
    (spec,) = parse_routes(minimal(ctype)).receivers["r"].channels
    assert spec.options == {o.name: GOOD[o.kind] if o.required else o.default for o in schema}
    everything = {o.name: GOOD[o.kind] + SECRET if o.secret else GOOD[o.kind] for o in schema}
    (spec,) = parse_routes(minimal(ctype, **everything)).receivers["r"].channels
    assert spec.options == everything | {o.name: 3000 for o in schema if o.kind == "duration"}
    assert "TOPSECRET" not in repr(spec)  # a secret option is never shown
    assert make_channel(spec).type == ctype


@pytest.mark.parametrize("ctype", TYPES)
def test_mistakes_in_an_entry(ctype: str) -> None:
    schema = CHANNELS[ctype].OPTIONS
    with pytest.raises(ConfigError, match=rf"receivers\[0\]\.{ctype}\.colour: unknown key"):
        parse_routes(minimal(ctype, colour="red"))
    for o in schema:
        path = rf"receivers\[0\]\.{ctype}\.{o.name}"
        with pytest.raises(ConfigError, match=rf"{path}s: unknown key; did you mean '{o.name}'\?"):
            parse_routes(minimal(ctype, **{o.name + "s": GOOD[o.kind]}))
        if o.required:
            with pytest.raises(ConfigError, match=rf"{path}: missing \(required\)"):
                parse_routes(minimal(ctype, **{o.name: None}))
        with pytest.raises(ConfigError, match=rf"{path}(\[0\])?: expected ") as err:
            parse_routes(minimal(ctype, **{o.name: BAD[o.kind]}))
        assert err.value.line == 3, str(err.value)
        if o.secret:
            assert repr(BAD[o.kind]) not in err.value.message


def test_an_option_of_an_unknown_kind_is_a_mistake_of_the_module() -> None:
    assert set(GOOD) == set(BAD) == set(OPTION_KINDS)
    with pytest.raises(ValueError, match="unknown kind 'colour'"):
        Option("x", "colour")
    with pytest.raises(ValueError, match="a required option has no default"):
        Option("x", "text", required=True, default="y")
