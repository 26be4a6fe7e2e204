"""The JT/T 808 authentication codes: issued at registration, kept hashed, replaced, revoked."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from registry.jt808_codes import CODE_LENGTH, AuthCodes


def test_an_issued_code_is_checked_and_only_its_hash_is_kept(tmp_path: Path) -> None:
    codes = AuthCodes(tmp_path / "jt808" / "codes.json")
    code = codes.issue(["013912345678"])["013912345678"]
    assert len(code) == CODE_LENGTH and code.isalnum()
    text = Path(codes.path).read_text()
    assert code not in text and "$7$" in text
    assert stat.S_IMODE(os.stat(codes.path).st_mode) == 0o600
    assert codes.check("013912345678", code)
    assert not codes.check("013912345678", code[:-1] + ("x" if code[-1] != "x" else "y"))


def test_the_2013_and_2019_forms_of_one_phone_share_its_code(tmp_path: Path) -> None:
    codes = AuthCodes(tmp_path / "codes.json")
    code = codes.issue(["013912345678"])["013912345678"]
    assert codes.check("00000000013912345678", code)
    assert list(json.loads(Path(codes.path).read_text())["codes"]) == ["13912345678"]


def test_a_new_registration_replaces_the_code_and_revoking_forgets_it(tmp_path: Path) -> None:
    codes = AuthCodes(tmp_path / "codes.json")
    first = codes.issue(["1"])["1"]
    assert codes.check("1", first)
    second = codes.issue(["1"])["1"]
    assert not codes.check("1", first) and codes.check("1", second)
    codes.revoke(["1"])
    assert not codes.check("1", second)


def test_another_process_revoking_is_seen_by_the_running_gateway(tmp_path: Path) -> None:
    gateway = AuthCodes(tmp_path / "codes.json", check_interval_s=0)
    code = gateway.issue(["139"])["139"]
    assert gateway.check("139", code)
    AuthCodes(tmp_path / "codes.json").revoke(["139"])  # an operator, elsewhere
    assert not gateway.check("139", code)
