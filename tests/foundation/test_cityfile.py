"""One reader for city-edited files: positions, unknown keys, durations with units (foundation/cityfile.py)."""

from __future__ import annotations

import pytest

from foundation.cityfile import Document, did_you_mean, format_duration_ms, parse_duration_ms
from foundation.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30s", 30_000), ("5m", 300_000), ("2h", 7_200_000), ("1h30m", 5_400_000), ("1d", 86_400_000),
     ("500ms", 500), (" 2h ", 7_200_000)],
)  # fmt: skip
def test_durations_carry_their_unit(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    assert parse_duration_ms(format_duration_ms(ms)) == ms


@pytest.mark.parametrize("value", [30, 30.0, "30", "", "h", "-5m", "5 minutes", None, True])
def test_a_duration_without_a_unit_is_not_a_duration(value: object) -> None:
    assert parse_duration_ms(value) is None


def _section(text: str):  # type: ignore[no-untyped-def]
    return Document.parse(text, "city.yaml").section()


def test_a_bare_number_as_a_duration_names_the_file_line_key_and_the_fix() -> None:
    sec = _section("a:\n  wait: 30\n").sub("a")
    with pytest.raises(ConfigError) as info:
        sec.duration_ms("wait", None)
    assert str(info.value) == (
        "city.yaml:2:9: a.wait: expected a duration with its unit, e.g. 30s, 5m, 2h, 1h30m, 1d or 500ms, "
        "got 30 (30s or 30m?)"
    )


def test_an_unknown_key_is_refused_with_one_hint() -> None:
    sec = _section("grace_hour: 2\n")
    sec.number("grace_hours", 2.0)
    with pytest.raises(
        ConfigError, match=r"city.yaml:1:1: grace_hour: unknown key; did you mean 'grace_hours'\?"
    ):
        sec.finish()


def test_a_key_given_twice_names_the_first_line() -> None:
    with pytest.raises(ConfigError, match=r"city.yaml:3:1: a: given twice \(first on line 1\)"):
        _section("a: 1\nb: 2\na: 3\n")


def test_a_yaml_syntax_error_has_its_position() -> None:
    with pytest.raises(ConfigError, match=r"city.yaml:2:\d+: not valid YAML"):
        Document.parse("a: [1,\n b: }\n", "city.yaml")


@pytest.mark.parametrize(
    "text", ["a: !!python/object:os.system x\n", "a: !!int seven\n", "a: !custom 1\n"]
)
def test_a_tag_the_safe_loader_cannot_read_is_an_error_at_the_value_not_a_traceback(
    text: str,
) -> None:
    sec = _section(text)
    with pytest.raises(ConfigError, match=r"city.yaml:1:4: cannot read this value"):
        sec.number("a", 1.0)


def test_did_you_mean_has_one_phrasing() -> None:
    assert did_you_mean("mahnole", ["manhole", "dust"]) == "; did you mean 'manhole'?"
    assert did_you_mean("zzz", ["manhole"]) == ""
    assert did_you_mean(3, ["manhole"]) == ""
