"""Reports for the finance office and the command center (docs/reports.md).

* ``settlement``: the monthly settlement, one statement per payer (扣款结算单);
* ``ranking``: the district ranking with the red and black lists (月排名、红黑榜);
* ``cases``: case statistics for a week or a month (案件统计).

All read the ledger and the case events from InfluxDB (``data``), so a report
can be produced long after the stream ran, and agree with ``citywatch replay``
on the same input. Each writes a CSV (UTF-8 with BOM) and PDF pages (``pdf``).
``cli`` holds the ``citywatch report`` subcommands; ``produce_*`` there are
the same steps as functions.
"""
