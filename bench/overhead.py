"""Overhead: glmrun against a bare thread pool calling the zhipuai SDK, for the same 1,000
single-turn conversations against the same emulator (latency 100 ms, its own process), in the
same run.

    .venv/bin/python bench/overhead.py [--n 1000] [--latency 0.1] [-j 50] [--rounds 3]

Three programs send the same requests, each `--rounds` times, interleaved; each figure is the
best of its rounds (the machine's noise only ever adds time):

- glmrun: the real CLI in a child process (interpreter start, imports, planning, transcript
  writing included), `--format json`;
- the bare SDK program (`bare_sdk.py`) in a child process: the same interpreter start and SDK
  import, then the pool, writing nothing. glmrun against this is the overhead: both are
  programs a user would start;
- the same pool in this already-running process with the SDK imported: stricter, it charges
  glmrun with starting Python and importing the SDK too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    GLMRUN,
    ChildRun,
    emulator,
    glmrun_env,
    run_child,
    write_suite,
)

BARE = str(Path(__file__).parent / "bare_sdk.py")


def warm_pool(base_url: str, n: int, jobs: int) -> tuple[float, float]:
    """Wall and CPU time of bare_sdk's pool run in this process, the SDK already imported."""
    import bare_sdk

    t0, c0 = time.perf_counter(), time.process_time()
    replies = bare_sdk.run(base_url, n, jobs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(replies) == n and all(replies)
    return wall, cpu


def checked(run: ChildRun, what: str) -> ChildRun:
    if run.returncode != 0:
        sys.exit(f"{what} exited {run.returncode}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("-j", "--jobs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import bare_sdk  # noqa: F401  -- imports the SDK before timing: the warm pool pays none

    glm: list[ChildRun] = []
    bare: list[ChildRun] = []
    warm: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, emulator(args.latency) as emu:
        suite = write_suite(Path(tmp) / "suite", args.n)
        warm_pool(emu.base_url, min(args.n, 100), args.jobs)  # warm the emulator, untimed
        for i in range(args.rounds):
            warm.append(warm_pool(emu.base_url, args.n, args.jobs))
            bare.append(checked(run_child(
                [sys.executable, BARE, emu.base_url, str(args.n), str(args.jobs)]), "bare SDK"))
            glm.append(checked(run_child(
                [GLMRUN, str(suite), "--base-url", emu.base_url, "-o", str(Path(tmp) / f"o{i}"),
                 "-j", str(args.jobs), "--format", "json", "--no-progress", "-q"],
                env=glmrun_env(),
            ), "glmrun"))
    g = min(glm, key=lambda r: r.wall_s)
    b = min(bare, key=lambda r: r.wall_s)
    w, w_cpu = min(warm)
    n = args.n
    print(f"ideal {n * args.latency / args.jobs:.2f}s; best of {args.rounds} rounds each: "
          f"glmrun {g.wall_s:.2f}s (rounds {' '.join(f'{r.wall_s:.2f}' for r in glm)}), "
          f"{g.user_s * 1000 / n:.2f} ms user + {g.sys_s * 1000 / n:.2f} ms system CPU per "
          f"conversation; bare SDK program {b.wall_s:.2f}s (rounds "
          f"{' '.join(f'{r.wall_s:.2f}' for r in bare)}), {b.cpu_s * 1000 / n:.2f} ms CPU per "
          f"request; warm pool {w:.2f}s, {w_cpu * 1000 / n:.2f} ms CPU per request")
    print(f"strict: glmrun against the warm pool (Python started, SDK imported): "
          f"{g.wall_s / w:.2f}×")
    print(f"overhead: glmrun {g.wall_s:.2f}s vs bare SDK program {b.wall_s:.2f}s = "
          f"{g.wall_s / b.wall_s:.2f}× (target ≤ 1.25×); CPU {g.cpu_s * 1000 / n:.2f} ms/"
          f"conversation vs {b.cpu_s * 1000 / n:.2f} ms/request")


if __name__ == "__main__":
    main()
