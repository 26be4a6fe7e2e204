"""Protocol gateways: devices that do not speak citywatch's MQTT JSON (docs/gateways.md).

One gateway = one module (``hj212``: HJ 212-2017 dust monitors over TCP), its
section in docs/gateways.md and its tests. A gateway turns each device's
records into the readings of the MQTT contract and publishes them, as the
gateway identity the registry's ``gateway`` column names, on the device's own
telemetry topic (docs/decisions/011-gateways-publish-over-mqtt.md says why
MQTT and not the journal); the frames it cannot take go, with their reason and
raw bytes, to ``city/gateway/<id>/deadletter`` (``report``), which the bridge
files on the dead-letter topic like its own.
"""
