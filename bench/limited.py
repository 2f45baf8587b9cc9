"""Limited: 1,000 single-turn conversations, emulator latency 100 ms with a concurrency limit of
20 (HTTP 429 / code 1302 beyond it), glmrun at `-j 50`. Ideal: 1,000 × 0.1 s / 20 = 5 s.

    .venv/bin/python bench/limited.py [--n 1000] [--latency 0.1] [--limit 20] [-j 50]

glmrun is the real CLI in a child process (startup included); the emulator runs in this
process so its 429 count can be read. glmrun's concurrency is read from its plain progress
lines (`--progress-every`), the last of which comes shortly before the end of the run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GLMRUN, glmrun_env, run_child, transcript_statuses, write_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("-j", "--jobs", type=int, default=50)
    args = ap.parse_args()

    from glmrun.mock import MockConfig, MockServer

    config = MockConfig(latency_s=args.latency, concurrency_limit=args.limit, record=False)
    with tempfile.TemporaryDirectory() as tmp, MockServer(config) as server:
        suite = write_suite(Path(tmp) / "suite", args.n)
        out = Path(tmp) / "out"
        run = run_child(
            [GLMRUN, str(suite), "--base-url", server.base_url, "-o", str(out),
             "-j", str(args.jobs), "--format", "json", "-q", "--progress-every", "0.25"],
            env=glmrun_env(),
        )
        statuses = transcript_statuses(out)
        retries = _rate_limit_retries(out)
    if run.returncode not in (0, 3):
        sys.exit(f"glmrun exited {run.returncode}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    widths = re.findall(r"^\[progress\] .*, concurrency (\d+),", run.stderr, re.M)
    final = widths[-1] if widths else "?"
    inner = re.search(r"wall time: ([\d.]+)s", run.stdout)
    ideal = args.n * args.latency / args.limit
    failed = args.n - statuses.get("passed", 0)
    print(f"transcripts {statuses}; emulator peak in flight {server.stats.peak_in_flight}; "
          f"rate-limit retries recorded in transcripts {retries}; glmrun concurrency over "
          f"time {' '.join(widths)}; run without startup {inner.group(1) if inner else '?'}s")
    print(f"limited: glmrun {run.wall_s:.2f}s vs ideal {ideal:.2f}s = {run.wall_s / ideal:.2f}× "
          f"(target ≤ 1.3×); failed conversations {failed} (must be 0); "
          f"429s at the emulator {server.stats.rejected}; final concurrency {final} "
          f"(limit {args.limit}, -j {args.jobs})")


def _rate_limit_retries(out: Path) -> int:
    total = 0
    for p in out.glob("*.json"):
        for call in json.loads(p.read_text("utf-8"))["calls"]:
            total += sum(1 for r in call["retries"] if r["error"]["kind"] == "rate_limit")
    return total


if __name__ == "__main__":
    main()
