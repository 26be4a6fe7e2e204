"""The committed Grafana files are exactly what the generator makes, and well formed.

No Grafana runs here (README, "Tests"): these checks stand for "it loads", and
test_grafana_queries runs every query against a real InfluxDB.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from citywatch.grafana import DATASOURCE_UID, FOLDER_UID
from citywatch.grafana.dashboards import artefacts, build_all, main
from citywatch.grafana.queries import RULES

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy" / "grafana"
CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]{2,}")
REGEN = "python -m citywatch.grafana.dashboards --out deploy/grafana"


@pytest.mark.parametrize("rel", sorted(artefacts()))
def test_committed_file_equals_generator_output(rel: str) -> None:
    path = DEPLOY / rel
    assert path.exists(), f"{path} missing: run `{REGEN}`"
    assert path.read_text(encoding="utf-8") == artefacts()[rel], f"{path} is stale: run `{REGEN}`"


def test_no_stray_dashboard_files() -> None:
    committed = {p.relative_to(DEPLOY).as_posix() for p in (DEPLOY / "dashboards").glob("*.json")}
    assert committed == {rel for rel in artefacts() if rel.startswith("dashboards/")}


def test_entry_point_writes_the_same_files(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    for rel, text in artefacts().items():
        assert (tmp_path / rel).read_text(encoding="utf-8") == text


def _datasource_refs(node: object):
    if isinstance(node, dict):
        if "datasource" in node:
            yield node["datasource"]
        for v in node.values():
            yield from _datasource_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _datasource_refs(v)


@pytest.mark.parametrize("name", sorted(build_all()))
def test_every_datasource_reference_is_citywatch_influx(name: str) -> None:
    model = build_all()[name]
    refs = list(_datasource_refs(model))
    assert refs, "dashboard references no datasource"
    assert all(r == {"type": "influxdb", "uid": DATASOURCE_UID} for r in refs), refs


@pytest.mark.parametrize("name", sorted(build_all()))
def test_every_panel_has_a_raw_influxql_query(name: str) -> None:
    model = build_all()[name]
    assert model["panels"]
    for panel in model["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["rawQuery"] is True and t["query"].startswith("SELECT "), (panel["title"], t)
            assert "$timeFilter" in t["query"], (
                panel["title"],
                "queries must be bounded by the time picker",
            )
            assert t["resultFormat"] in ("table", "time_series")


@pytest.mark.parametrize("name", sorted(build_all()))
def test_titles_are_chinese_with_english(name: str) -> None:
    model = build_all()[name]
    titles = [model["title"], *(p["title"] for p in model["panels"])]
    titles += [a["name"] for a in model["annotations"]["list"]]
    titles += [v["label"] for v in model["templating"]["list"]]
    for title in titles:
        assert CJK.search(title) and LATIN.search(title), title


@pytest.mark.parametrize("name", sorted(build_all()))
def test_dashboard_shape(name: str) -> None:
    model = build_all()[name]
    assert model["uid"].startswith("citywatch-") and len(model["uid"]) <= 40
    assert model["refresh"], "wall dashboards refresh themselves"
    assert {v["name"] for v in model["templating"]["list"]} == {"district", "unit"}
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for p in model["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


def test_dashboard_uids_are_unique() -> None:
    uids = [m["uid"] for m in build_all().values()]
    assert len(uids) == len(set(uids)) == 6


def test_datasource_provisioning() -> None:
    doc = yaml.safe_load(
        (DEPLOY / "provisioning/datasources/citywatch.yaml").read_text(encoding="utf-8")
    )
    (ds,) = doc["datasources"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "influxdb"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["httpMode"] == "POST"
    assert ds["jsonData"]["dbName"] == "${CITYWATCH_INFLUX_DATABASE}"
    assert "database" not in ds and "database" not in ds["jsonData"], "deprecated key"


def test_dashboard_provider() -> None:
    doc = yaml.safe_load(
        (DEPLOY / "provisioning/dashboards/citywatch.yaml").read_text(encoding="utf-8")
    )
    (prov,) = doc["providers"]
    assert prov["type"] == "file" and prov["folderUid"] == FOLDER_UID
    assert prov["allowUiUpdates"] is False and prov["options"]["path"]


def test_panels_select_only_rule_ids_the_contract_defines() -> None:
    """A panel filtering on a rule no code emits stays blank forever."""
    from contract.rules import RULES as CONTRACT_RULES
    from streams import dust, manhole, streetlight

    assert {r for ids in RULES.values() for r in ids} <= set(CONTRACT_RULES)
    assert dust.RULE in RULES["dust_violation"]
    assert dust.WARNING_RULE in RULES["dust_warning"]
    assert dust.FLATLINE_RULE in RULES["tamper"]
    assert manhole.RULE in RULES["manhole_abnormal"]
    assert streetlight.FAULT_RULE in RULES["streetlight_fault"]
    assert streetlight.LEAKAGE_RULE in RULES["streetlight_leakage"]


def test_json_is_plain_utf8_not_escaped() -> None:
    text = (DEPLOY / "dashboards" / "command-center.json").read_text(encoding="utf-8")
    assert "指挥中心" in text
    json.loads(text)
