"""The officer directory (registry/officers.py) and officers' tokens (registry/officer_tokens.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.errors import ConfigError
from registry.officer_tokens import TokenError, TokenStore
from registry.officers import load_directory

ROOT = Path(__file__).resolve().parents[2]


def _dir(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "officers.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_the_example_directory_covers_every_simulated_district() -> None:
    from sim.city import DISTRICTS

    d = load_directory(ROOT / "config" / "officers.example.yaml")
    for district in DISTRICTS:
        roles = {r for o in d.officers.values() if district.id in o.districts for r in o.roles}
        assert {"duty", "grid", "district_supervisor"} <= roles, district.id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("officers:\n  - {id: a, name: A, roles: [boss], districts: [jinshui]}\n", r":2:.*unknown role 'boss'"),
        ("officers:\n  - {id: a, name: A, roles: [duty]}\n", "acts in no district"),
        ("officers:\n  - {id: a, name: A, roles: [duty], districts: [jinshui]}\n"
         "  - {id: a, name: B, roles: [grid], districts: [jinshui]}\n", r":3:.*given twice \(first on line 2\)"),
        ("officers:\n  - {id: 'a b', name: A, roles: [duty], districts: [jinshui]}\n", "is not an officer id"),
        ("officers:\n  - {id: a, name: \"A\\0\", roles: [duty], districts: [jinshui]}\n", "control characters"),
        ("officers:\n  - {id: a, name: A, roles: [duty], districts: [jinshui], pager: 1}\n", "unknown key"),
        ("officers: []\n", "lists no officers"),
    ],
)  # fmt: skip
def test_a_bad_directory_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_directory(_dir(tmp_path, text))


def test_a_token_is_shown_once_and_kept_only_as_a_hash(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "officers")
    token, info = store.issue("sup-js", now_ms=1_000)
    kept = (tmp_path / "officers" / "tokens.json").read_text()
    assert token.split("_", 2)[2] not in kept and info.token_id in kept
    assert (tmp_path / "officers" / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert store.verify(token, now_ms=2_000).officer == "sup-js"


def test_a_revoked_or_expired_or_altered_token_is_refused(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "officers")
    token, info = store.issue("grid-js", ttl_days=1, now_ms=0)
    with pytest.raises(TokenError, match="expired"):
        store.verify(token, now_ms=86_400_000)
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(TokenError, match="is not valid"):
        store.verify(altered, now_ms=1)
    with pytest.raises(TokenError, match="not a citywatch officer token"):
        store.verify("Bearer 令牌", now_ms=1)
    store.revoke(info.token_id, now_ms=2)
    with pytest.raises(TokenError, match="revoked"):
        store.verify(token, now_ms=3)


def test_revoking_an_officer_revokes_all_their_tokens(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "officers")
    a, _ = store.issue("duty-js")
    b, _ = store.issue("duty-js")
    c, _ = store.issue("grid-js")
    assert len(store.revoke_officer("duty-js")) == 2
    for t in (a, b):
        with pytest.raises(TokenError):
            store.verify(t)
    assert store.verify(c).officer == "grid-js"
