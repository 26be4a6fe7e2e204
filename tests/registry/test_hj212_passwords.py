"""The HJ 212 monitors' PW: issued once, kept hashed, rotated on request, checked by the gateway."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from foundation.errors import CitywatchError
from registry.devices import load_registry
from registry.hj212_passwords import PasswordStore, PasswordWatcher

ROWS = (
    "device_id,kind,district,grid,unit,gateway,mn\n"
    "DS-1,dust,jinshui,G1,U,gw-1,MN0001\n"
    "DS-2,dust,jinshui,G1,U,gw-1,MN0002\n"
    "MH-1,manhole,jinshui,G1,U,,\n"
)


@pytest.fixture
def registry(tmp_path: Path):  # noqa: ANN201
    path = tmp_path / "registry.csv"
    path.write_text(ROWS, encoding="utf-8")
    return load_registry(path)


def test_every_monitor_gets_a_six_character_pw_and_only_its_hash_is_kept(
    registry, tmp_path: Path
) -> None:  # noqa: ANN001
    store = PasswordStore(tmp_path / "pw" / "passwords.json")
    issued = store.issue(registry)
    assert [(i.device_id, i.mn) for i in issued] == [("DS-1", "MN0001"), ("DS-2", "MN0002")]
    assert all(len(i.pw) == 6 and i.pw.isalnum() for i in issued)
    text = Path(store.path).read_text()
    assert all(i.pw not in text for i in issued) and "$7$" in text
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.issue(registry) == []  # nothing new: nothing handed out again


def test_a_rotated_pw_replaces_the_old_one_at_the_gateway(registry, tmp_path: Path) -> None:  # noqa: ANN001
    store = PasswordStore(tmp_path / "passwords.json")
    old = {i.mn: i.pw for i in store.issue(registry)}
    watcher = PasswordWatcher(store.path, check_interval_s=0)
    assert watcher.check("MN0001", old["MN0001"]) and not watcher.check("MN0001", "nope00")
    (new,) = store.issue(registry, rotate=["DS-1"])
    assert new.mn == "MN0001" and new.pw != old["MN0001"]
    assert not watcher.check("MN0001", old["MN0001"])
    assert watcher.check("MN0001", new.pw) and watcher.check("MN0002", old["MN0002"])


def test_rotating_what_is_no_monitor_names_it(registry, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(CitywatchError, match="--rotate MH-1: no HJ 212 monitor"):
        PasswordStore(tmp_path / "p.json").issue(registry, rotate=["MH-1"])
