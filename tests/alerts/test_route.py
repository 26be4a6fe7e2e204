"""alerts/route.py: the shipped routing file loads, matching follows the tree, and every mistake names its place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alerts.channels import CHANNELS
from alerts.route import load_routes, parse_routes
from foundation.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
receivers:
  - name: grid
    console: {}
  - name: duty
    webhook: {url: "http://127.0.0.1:1/hook", secret: s3cret}
  - name: command
    email: {host: 127.0.0.1, port: 2525, from: cw@example.org, to: [a@example.org, b@example.org]}
escalations:
  std:
    - {receiver: duty, after: {critical: 5m, major: 30m}}
    - {receiver: command, after: {critical: 15m, major: 2h}}
route:
  receiver: grid
  escalation: std
  routes:
    - match: {kind: manhole}
      group_by: [case_id]
      group_wait: 5s
      routes:
        - match_re: {district: "jin.*"}
          receiver: duty
    - match: {severity: [critical]}
      receiver: command
      continue: true
    - match: {severity: critical}
      receiver: duty
    - match: {rule: streetlight.fault}
      escalation: null
"""


def labels(**kw: str) -> dict[str, str]:
    base = {"kind": "streetlight", "rule": "streetlight.fault", "severity": "minor", "district": "erqi",
            "grid": "G1", "unit": "u", "device": "SL-1"}  # fmt: skip
    return base | kw


def test_the_default_file_loads_and_routes_every_kind() -> None:
    cfg = load_routes(ROOT / "config" / "routes.yaml")
    assert cfg.root.receiver == "grid-officer"
    lv = cfg.escalations["standard"].levels
    assert [lv[0].after_ms["critical"], lv[1].after_ms["critical"]] == [5 * 60_000, 15 * 60_000]
    assert [lv[0].after_ms["major"], lv[1].after_ms["major"]] == [30 * 60_000, 2 * 3_600_000]
    for rule in (
        "manhole",
        "dust",
        "dust.warning",
        "streetlight.fault",
        "streetlight.leakage",
        "offline",
    ):
        assert cfg.match(labels(rule=rule, kind=rule.split(".")[0]))


def test_a_broker_case_goes_to_the_command_center_at_once_and_nobody_s_grid_officer() -> None:
    """Readings the broker acknowledged and dropped (docs/contracts.md, "Broker counters")."""
    cfg = load_routes(ROOT / "config" / "routes.yaml")
    broker = labels(kind="broker", rule="broker.dropped", severity="critical", district="",
                    grid="", unit="", device="cw-bridge-1")  # fmt: skip
    assert [(r.receiver, r.group_by, r.group_wait_ms, r.escalation) for r in cfg.match(broker)] == [
        ("city-command", ("case_id",), 0, None)
    ]


def test_the_example_receivers_in_the_shipped_file_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commented "a city's receivers look like this" block of config/routes.yaml is a valid routing file."""
    text = (ROOT / "config" / "routes.yaml").read_text(encoding="utf-8")
    block = text.split("# A city's receivers look like this:\n#\n", 1)[1].split(
        "#\n# and route per district:", 1
    )[0]
    receivers = "".join(line[2:] + "\n" for line in block.splitlines())
    for var in re.findall(r"\$\{(\w+)\}", receivers):
        monkeypatch.setenv(var, f"value-of-{var}")
    cfg = parse_routes(
        f"receivers:\n{receivers}route: {{receiver: city-command}}\n",
        "config/routes.yaml (examples)",
    )
    assert [(n, [c.type for c in r.channels]) for n, r in cfg.receivers.items()] == [
        ("jinshui-grid", ["wecom"]),
        ("jinshui-duty", ["dingtalk"]),
        ("city-command", ["webhook", "email"]),
    ]
    assert (
        cfg.receivers["jinshui-duty"].channels[0].options["secret"] == "value-of-DT_JINSHUI_SECRET"
    )


def test_matching_descends_inherits_and_continues() -> None:
    cfg = parse_routes(BASE, "routes.yaml")
    manhole_jinshui = cfg.match(
        labels(kind="manhole", rule="manhole", severity="major", district="jinshui")
    )
    assert [(r.id, r.receiver, r.group_by, r.group_wait_ms) for r in manhole_jinshui] == [
        ("root.0.0", "duty", ("case_id",), 5000)
    ]  # inherits group_by/group_wait from its parent
    manhole_erqi = cfg.match(labels(kind="manhole", rule="manhole", severity="major"))
    assert [r.id for r in manhole_erqi] == ["root.0"]
    critical = cfg.match(
        labels(kind="streetlight", rule="streetlight.leakage", severity="critical")
    )
    assert [r.receiver for r in critical] == [
        "command",
        "duty",
    ]  # continue: true goes on to the next sibling
    fault = cfg.match(labels())
    assert [(r.id, r.escalation) for r in fault] == [("root.3", None)]
    dust = cfg.match(labels(kind="dust", rule="dust", severity="major"))
    assert [(r.id, r.receiver, r.escalation) for r in dust] == [
        ("root", "grid", "std")
    ]  # the default


def test_channels_are_validated() -> None:
    cfg = parse_routes(BASE)
    (hook,) = cfg.receivers["duty"].channels
    assert hook.type == "webhook" and hook.target == "webhook:http://127.0.0.1:1/hook"
    assert hook.options == {
        "url": "http://127.0.0.1:1/hook",
        "secret": "s3cret",
        "headers": None,
        "timeout": None,
    }
    (mail,) = cfg.receivers["command"].channels
    assert mail.options["to"] == ["a@example.org", "b@example.org"] and mail.options["port"] == 2525
    assert mail.target == "email:127.0.0.1:2525:a@example.org,b@example.org"


def test_durations_carry_their_unit() -> None:
    for text, ms in (("30s", 30_000), ("5m", 300_000), ("2h", 7_200_000), ("1h30m", 5_400_000), ("500ms", 500),
                     ("0s", 0), ("1d", 86_400_000)):  # fmt: skip
        assert (
            parse_routes(BASE.replace("group_wait: 5s", f"group_wait: {text}"))
            .route("root.0")
            .group_wait_ms
            == ms
        )
    for bad in ("30", "5 minutes", "-1", "true", "m"):
        with pytest.raises(
            ConfigError, match="route.routes.0..group_wait: expected a duration with its unit"
        ):
            parse_routes(BASE.replace("group_wait: 5s", f"group_wait: {bad}"))


def test_environment_variables_fill_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CW_TEST_SECRET", "from-env")
    text = BASE.replace("secret: s3cret", 'secret: "${CW_TEST_SECRET}"')
    assert parse_routes(text).receivers["duty"].channels[0].options["secret"] == "from-env"
    monkeypatch.delenv("CW_TEST_SECRET")
    with pytest.raises(
        ConfigError,
        match=r"routes.yaml:5:\d+: receivers\[1\].webhook.secret: environment variable "
        r"CW_TEST_SECRET is not set",
    ):
        parse_routes(text, "routes.yaml")


ERRORS = [
    # (replace this, with this, expected line, message fragment)
    (
        "    console: {}",
        "    consol: {}",
        3,
        "receivers[0].consol: unknown key; did you mean 'console'?",
    ),
    (
        "      receiver: duty\n    - match: {severity: [critical]}",
        "      receiver: nobody\n    - match: {severity: [critical]}",
        21,
        "route.routes[0].routes[0].receiver: unknown receiver 'nobody'; defined: grid, duty, command",
    ),
    (
        "      group_wait: 5s",
        "      group_wait: 5 minutes",
        18,
        "route.routes[0].group_wait: expected a duration with its unit, e.g. 30s, 5m, 2h, 1h30m, 1d or 500ms, got '5 minutes'",
    ),
    (
        'match_re: {district: "jin.*"}',
        'match_re: {district: "jin(.*"}',
        20,
        "bad regular expression",
    ),
    (
        "match: {severity: [critical]}",
        "match: {severity: [urgent]}",
        22,
        "route.routes[1].match.severity: unknown severity 'urgent'; allowed: info, warning, minor, major, critical",
    ),
    (
        "match: {rule: streetlight.fault}",
        "match: {colour: red}",
        27,
        "route.routes[3].match.colour: unknown label 'colour'",
    ),
    (
        "after: {critical: 15m, major: 2h}",
        "after: {critical: 15m, major: 20m}",
        11,
        "escalations.std[1].after.major: a level must come later than the one before it",
    ),
    (
        "  escalation: std\n",
        "  escalation: fast\n",
        14,
        "route.escalation: unknown escalation 'fast'; defined: std",
    ),
    (
        "port: 2525, from: cw@example.org",
        "port: 2525, from: nobody",
        7,
        "receivers[2].email.from: expected an e-mail address, got 'nobody'",
    ),
    (
        'url: "http://127.0.0.1:1/hook"',
        'url: "ftp://x"',
        5,
        "receivers[1].webhook.url: expected an http(s):// URL",
    ),
    (
        "      group_by: [case_id]",
        "      group_by: [colour]",
        17,
        "route.routes[0].group_by[0]: unknown label 'colour'",
    ),
    (
        "  - name: duty\n",
        "  - name: grid\n",
        4,
        "receiver 'grid' is defined twice (first on line 2)",
    ),
    (
        "route:\n  receiver: grid\n",
        "route:\n  match: {kind: dust}\n  receiver: grid\n",
        13,
        "route.match: the root route matches everything",
    ),
    (
        "      continue: true",
        "      continue: yes please",
        24,
        "route.routes[1].continue: expected true or false",
    ),
    ("      group_wait: 5s", "      group_wait: [5s", 19, "not valid YAML"),
    # a duration without its unit is refused, never taken as seconds
    (
        "      group_wait: 5s",
        "      group_wait: 30",
        18,
        "route.routes[0].group_wait: expected a duration with its unit, e.g. 30s, 5m, 2h, 1h30m, 1d or 500ms, got 30 (30s or 30m?)",
    ),
    (
        "after: {critical: 5m, major: 30m}",
        "after: {critical: 5, major: 30m}",
        10,
        "escalations.std[0].after.critical: expected a duration with its unit",
    ),
    (
        "secret: s3cret}",
        "secret: s3cret, timeout: 10}",
        5,
        "receivers[1].webhook.timeout: expected a duration with its unit",
    ),
    (
        "route:\n",
        "delivery: {retry_max: 300}\nroute:\n",
        12,
        "delivery.retry_max: expected a duration with its unit",
    ),
    # unknown channel types and keys
    (
        "    console: {}",
        "    webhooks: {}",
        3,
        "receivers[0].webhooks: unknown key; did you mean 'webhook'?",
    ),
    (
        "    console: {}",
        "    e-mail: {}",
        3,
        "receivers[0].e-mail: unknown key; did you mean 'email'?",
    ),
    (
        "    console: {}",
        "    pager: {}",
        3,
        f"receivers[0].pager: unknown key; a receiver has name, officer, roles, label and channels: {', '.join(CHANNELS)}",
    ),
    (
        "secret: s3cret}",
        "secret: s3cret, retries: 3}",
        5,
        "receivers[1].webhook.retries: unknown key; allowed: url, secret",
    ),
    (
        "route:\n  receiver: grid\n",
        "route:\n  reciever: grid\n",
        13,
        "route.reciever: unknown key; did you mean 'receiver'?",
    ),
    ("escalations:", "escalation:", 8, "escalation: unknown key; did you mean 'escalations'?"),
    (
        "match: {kind: manhole}",
        "match: {knd: manhole}",
        16,
        "route.routes[0].match.knd: unknown label 'knd'; did you mean 'kind'?",
    ),
    (
        "      escalation: null",
        "      escalation: sdt",
        28,
        "route.routes[3].escalation: unknown escalation 'sdt'; did you mean 'std'?",
    ),
    # required options
    (
        'webhook: {url: "http://127.0.0.1:1/hook", secret: s3cret}',
        "webhook: {secret: s3cret}",
        5,
        "receivers[1].webhook.url: missing (required)",
    ),
    (", to: [a@example.org, b@example.org]}", "}", 7, "receivers[2].email.to: missing (required)"),
    (
        "  - name: grid\n    console: {}",
        "  - console: {}",
        2,
        "receivers[0].name: missing (required)",
    ),
    (
        "  - name: grid\n    console: {}",
        "  - name: grid",
        2,
        "receivers[0]: receiver 'grid' has no channel",
    ),
    (
        "    - {receiver: duty, after: {critical: 5m, major: 30m}}",
        "    - {receiver: duty}",
        10,
        "escalations.std[0].after: missing (required)",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"), ERRORS, ids=[e[3][:40] for e in ERRORS]
)
def test_mistakes_name_file_and_line(old: str, new: str, line: int, fragment: str) -> None:
    assert old in BASE
    with pytest.raises(ConfigError) as err:
        parse_routes(BASE.replace(old, new, 1), "routes.yaml")
    assert err.value.file == "routes.yaml"
    assert fragment in err.value.message, str(err.value)
    assert err.value.line == line, str(err.value)


def test_missing_sections_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="route: missing"):
        parse_routes("receivers:\n  - {name: a, console: {}}\n")
    with pytest.raises(ConfigError, match="has no channel"):
        parse_routes("receivers:\n  - {name: a}\nroute: {receiver: a}\n")
    with pytest.raises(ConfigError, match="empty"):
        parse_routes("")
    with pytest.raises(ConfigError, match="cannot read the routing file"):
        load_routes(tmp_path / "nope.yaml")
