"""InfluxDB storage (docs/contracts.md, "InfluxDB"; docs/decisions/002-influxql-and-v1-write.md).

* ``points``: citywatch's records as line protocol (the schema, written).
* ``writer``: ``InfluxWriter``, the bounded buffer with back-pressure and retries.
* ``schema``: database, retention policies (``LEDGER_RP``), continuous queries.
* ``read``: the one read-back path into citywatch's records.
* ``influxql``: one ``POST /query``, values as bound parameters.
* ``errors``: ``InfluxError``, ``InfluxQueryError``.
"""
