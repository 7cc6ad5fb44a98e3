"""pixelbatch benchmark (issue #5): floor vs naive vs embedded vs distributed, one run,
interleaved rounds, medians; memory, status latency, and a 100,000-row CSV.

    .venv/bin/python -m bench.run                 # the full run (~10 min on 2 cores)
    .venv/bin/python -m bench.run --quick         # smoke: tiny corpus, 1 round, < 60 s
    .venv/bin/python -m bench.run --help          # every knob

Everything stays on this machine: images come from a local server on 127.0.0.1, the
distributed mode uses the local PostgreSQL (a fresh database, dropped after) and Redis
(db 14, flushed before and after). Results: bench/.cache/results.json.
"""

from __future__ import annotations

import sys

from bench.config import parse
from bench.report import print_report
from bench.scenarios import run

__all__ = ["main", "parse", "print_report", "run"]


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv, description=__doc__)
    report = run(cfg)
    print_report(report, cfg.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
