"""What following the sun costs the streetlight rule: the detection core over the same lamps'
readings with the sun schedule (the default) and with the fixed timetable (the baseline),
interleaved in one run.

    .venv/bin/python bench/daylight.py [--devices 3000] [--hours 24] [--repeats 5]

The readings are built up front (a simulated city's streetlights only, a day
and a night of them); each pass feeds them to a fresh ``Detector`` and the best
pass of each schedule is kept. Passes alternate (sun, fixed, sun, ...) so a
machine that speeds up or slows down during the run shifts both alike. The
ratio is sun / fixed events per second: 1.00 means the sun costs nothing.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contract.clock import HOUR_MS  # noqa: E402
from contract.reading import Reading  # noqa: E402
from ingest.validate import parse_message  # noqa: E402
from sim.city import build_city, split_devices  # noqa: E402
from sim.simulator import DEFAULT_START_MS, Simulation  # noqa: E402
from streams.daylight import Schedule  # noqa: E402
from streams.detector import Detector  # noqa: E402
from streams.rules import load_rules  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=3000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    city = build_city(7, *split_devices(args.devices))
    registry = city.registry()
    readings = []
    for due, topic, payload in Simulation(city, seed=7).events(
        DEFAULT_START_MS + int(args.hours * HOUR_MS)
    ):
        if "/streetlight/" in topic:
            r = parse_message(topic, payload, due, registry)
            if isinstance(r, Reading):
                readings.append(r)
    sun = load_rules(ROOT / "config" / "rules.yaml")
    fixed = sun.with_sections(streetlight=replace(sun.streetlight, schedule=Schedule("fixed")))
    print(f"# {platform.python_implementation()} {platform.python_version()}; "
          f"{len(readings):,} streetlight readings of {len(city.of_kind('streetlight'))} lamps, "
          f"{args.hours:g} sim h; best of {args.repeats} interleaved passes")  # fmt: skip
    best = {"sun": 0.0, "fixed": 0.0}
    cases = {"sun": 0, "fixed": 0}
    for k in range(args.repeats * 2):
        name, rules = ("sun", sun) if k % 2 == 0 else ("fixed", fixed)
        det = Detector(rules, registry)
        n_out = 0
        t = time.perf_counter()
        for r in readings:
            n_out += len(det.on_reading(r))
        best[name] = max(best[name], len(readings) / (time.perf_counter() - t))
        cases[name] = n_out
        print(
            f"  pass {k + 1:>2} {name:<5} {len(readings) / (time.perf_counter() - t):>12,.0f} ev/s",
            flush=True,
        )
    print(
        f"fixed timetable (baseline) {best['fixed']:>12,.0f} ev/s   1.00x   outputs {cases['fixed']}"
    )
    print(
        f"sun at each lamp           {best['sun']:>12,.0f} ev/s   {best['sun'] / best['fixed']:.2f}x   outputs {cases['sun']}"
    )


if __name__ == "__main__":
    main()
