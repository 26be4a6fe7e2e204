"""Grafana dashboards as code, and pushing them to a Grafana that already runs.

* ``queries``: the InfluxQL every panel runs (one small query class, no query
  builder), the rule ids the panels filter on, and ``render``, which expands
  Grafana's macros the way Grafana does so tests can run every panel's query
  against a real InfluxDB.
* ``dashboards``: plain-dict builders for the five dashboards and the two
  provisioning files; ``python -m citywatch.grafana.dashboards --out DIR``
  (or ``write_all(DIR)``) regenerates what is committed in ``deploy/grafana/``.
* ``push``: ``push(url, token, ...)`` creates or updates the folder, the
  datasource and every dashboard through grafana-client, changing nothing that
  is already as wanted.

Names every part shares (dashboards refer to the datasource by this uid only)
live here, once.
"""

from __future__ import annotations

from contract.clock import DEFAULT_TIMEZONE

DATASOURCE_UID = "citywatch-influx"
"""Every panel, variable and annotation names the datasource by this uid."""
DATASOURCE_NAME = "citywatch InfluxDB"
DATASOURCE_TYPE = "influxdb"
FOLDER_UID = "citywatch"
FOLDER_TITLE = "城市运行监管 citywatch"
TIMEZONE = DEFAULT_TIMEZONE
"""Dashboards show, and "today"/"this month" panels cut days at, city time,
whatever the viewer's browser says: a penalty day is the city's day."""

__all__ = [
    "DATASOURCE_NAME",
    "DATASOURCE_TYPE",
    "DATASOURCE_UID",
    "FOLDER_TITLE",
    "FOLDER_UID",
    "TIMEZONE",
]
