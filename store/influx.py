"""Old name of the store's modules, kept only for importers outside this room's
change (tests/pipeline/test_officer_actions.py, tests/test_pipeline_end_to_end.py,
tests/reports/test_reports_scenario.py). New code imports from where things live:

* ``store.writer``: ``InfluxWriter``, ``WriterStats``;
* ``store.schema``: ``ensure_database``, ``LEDGER_RP``, ``PENALTY``, ``CASE_EVENT``;
* ``store.read``: the read-back into citywatch's records;
* ``store.influxql``: ``query`` (raw InfluxQL with bound parameters);
* ``store.errors``: ``InfluxError``, ``InfluxQueryError``.
"""

from store.errors import InfluxError, InfluxQueryError
from store.influxql import query
from store.schema import CASE_EVENT, DEFAULT_DOWNSAMPLE, LEDGER_RP, PENALTY, ensure_database
from store.writer import InfluxWriter, WriterStats

__all__ = [
    "CASE_EVENT",
    "DEFAULT_DOWNSAMPLE",
    "LEDGER_RP",
    "PENALTY",
    "InfluxError",
    "InfluxQueryError",
    "InfluxWriter",
    "WriterStats",
    "ensure_database",
    "query",
]
