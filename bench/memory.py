"""Memory: peak RSS of the glmrun process for 20,000 single-turn conversations against 2,000
(emulator latency 0, in its own process); each glmrun run is measured in a fresh child so its
ru_maxrss is its own.

    .venv/bin/python bench/memory.py [--small 2000] [--large 20000] [-j 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GLMRUN, emulator, glmrun_env, measure_child, transcript_statuses, write_suite


def peak_rss(base_url: str, n: int, jobs: int, tmp: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one glmrun run over n conversations."""
    suite = write_suite(tmp / f"suite{n}", n)
    out = tmp / f"out{n}"
    run = measure_child(
        [GLMRUN, str(suite), "--base-url", base_url, "-o", str(out), "-j", str(jobs),
         "--no-progress", "-q"],
        env=glmrun_env(),
    )
    if run.returncode != 0:
        sys.exit(f"glmrun exited {run.returncode}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    statuses = transcript_statuses(out)
    if statuses != {"passed": n}:
        sys.exit(f"expected {n} passed transcripts, found {statuses}")
    print(f"{n} conversations: peak RSS {run.maxrss_mb:.1f} MB, {run.wall_s:.1f}s wall, "
          f"{run.cpu_s * 1000 / n:.2f} ms CPU/conversation")
    return run.maxrss_mb, run.wall_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("-j", "--jobs", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, emulator(0.0) as emu:
        small, _ = peak_rss(emu.base_url, args.small, args.jobs, Path(tmp))
        large, _ = peak_rss(emu.base_url, args.large, args.jobs, Path(tmp))
    growth = (large / small - 1) * 100
    print(f"memory: peak RSS {large:.1f} MB for {args.large:,} conversations vs {small:.1f} MB "
          f"for {args.small:,} = {growth:+.0f}% (targets ≤ 150 MB and within ±20%)")


if __name__ == "__main__":
    main()
