"""Overhead: CPU per conversation of glmrun against a bare thread pool calling the zhipuai SDK,
for the same 1,000 single-turn conversations against the same server, in the same run.

    .venv/bin/python bench/overhead.py [--n 1000] [--latency 0.1] [-j 50] [--rounds 5]
                                       [--before DIR]

The server is `plain_server.py` in its own process: the standard library's HTTP/1.0 server
(every request a new connection, closed after its answer), latency 100 ms. Each round runs,
back to back (which goes first alternates):

- glmrun: the real CLI in a child process, default formats (JSON + Markdown transcripts), so
  interpreter start, imports, planning and transcript writing are all counted;
- the bare SDK program (`bare_sdk.py`) in a child process: the same interpreter start and SDK
  import, then a `ThreadPoolExecutor(50)` over a 50-connection pool, writing nothing;
- the same pool in this already-running process (SDK imported): the `strict` figure, which
  charges glmrun with starting Python and importing the SDK too.

`--before DIR` adds, each round, the glmrun package found in DIR (an older version, say): its
figures are printed before the last line, from the same run.

CPU is user + system time of the child (RUSAGE_CHILDREN), which does not depend on how fast the
server answers; on a CPU-bound 2-core machine wall time follows it. The headline (last line) is
the median over rounds; the line before gives every round, so the spread is visible.

Every glmrun run writes into a folder of its own and nothing is deleted before the end: on an
ext4 file system without a journal (this machine's) creating a file costs a scan past every
inode deleted in the last minutes, so deleting one run's 2,000 files before the next would
charge the next with it. Before the first round the script waits (at most `--disk-wait`, 7
minutes) until creating files costs what it does on a quiet disk; each round then prints what a
conversation's two files cost at that moment (`disk`), the part of glmrun's CPU that is the
file system's.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    GLMRUN,
    ChildRun,
    byte_compile_glmrun,
    glmrun_env,
    plain_server,
    run_child,
    transcript_statuses,
    write_suite,
)

BARE = str(Path(__file__).parent / "bare_sdk.py")
QUIET_MS = 0.2  # a conversation's two files on a quiet disk here: 0.03-0.15 ms of CPU


def warm_pool(base_url: str, n: int, jobs: int) -> tuple[float, float]:
    """Wall and CPU time of bare_sdk's pool run in this process, the SDK already imported."""
    import bare_sdk

    t0, c0 = time.perf_counter(), time.process_time()
    replies = bare_sdk.run(base_url, n, jobs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(replies) == n and all(replies)
    return wall, cpu


def disk_ms(folder: Path, n: int) -> float:
    """CPU ms to create n pairs of small files (temporary name, then renamed, as glmrun writes
    a transcript) in a new `folder`, kept: what the disk charges per conversation right now."""
    folder.mkdir(parents=True)
    payload = b"x" * 3000
    c0 = time.process_time()
    for i in range(n):
        for ext in ("md", "json"):
            tmp = folder / f".{i}.{ext}.tmp"
            tmp.write_bytes(payload)
            tmp.replace(folder / f"{i}.{ext}")
    return (time.process_time() - c0) * 1000 / n


def wait_for_quiet_disk(folder: Path, limit_s: float) -> None:
    """Until creating files costs what it does on a quiet disk (≤ QUIET_MS per conversation),
    at most `limit_s`: files deleted just before (a test run, the last benchmark's cleanup)
    slow every new file for minutes on this machine (see the module's docstring)."""
    deadline = time.monotonic() + limit_s
    for k in itertools.count():
        cost = disk_ms(folder / f"probe{k}", 500)
        if cost <= QUIET_MS or time.monotonic() >= deadline:
            return
        print(f"disk busy ({cost:.2f} ms of CPU for a conversation's two files): waiting "
              f"for it to settle (at most {deadline - time.monotonic():.0f} s more)",
              file=sys.stderr, flush=True)
        time.sleep(20)


def checked(run: ChildRun, what: str) -> ChildRun:
    if run.returncode != 0:
        sys.exit(f"{what} exited {run.returncode}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("-j", "--jobs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--disk-wait", type=float, default=420.0, metavar="S",
                    help="wait at most S seconds for a quiet disk before the first round "
                         "(0: don't wait)")
    ap.add_argument("--out-base", type=Path, metavar="DIR",
                    help="write glmrun's transcripts under DIR instead of the system's temporary "
                         "folder (e.g. /dev/shm, a RAM disk: glmrun's CPU without the disk's)")
    ap.add_argument("--before", type=Path, metavar="DIR",
                    help="also run, each round, the glmrun package in DIR (put first on "
                         "PYTHONPATH; e.g. `git archive main glmrun | tar -x -C DIR`): "
                         "before/after figures from the same run")
    args = ap.parse_args()
    n = args.n

    import bare_sdk  # noqa: F401  -- imports the SDK before timing: the warm pool pays none
    byte_compile_glmrun()
    if args.before is not None:
        compileall.compile_dir(args.before / "glmrun", quiet=1)

    glm: list[ChildRun] = []
    bare: list[ChildRun] = []
    warm: list[tuple[float, float]] = []
    before: list[ChildRun] = []
    disk: list[float] = []
    folders = itertools.count()
    with (tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=args.out_base) as
          out_base, plain_server(args.latency) as server):
        suite = write_suite(Path(tmp) / "suite", n)
        outs = Path(out_base)

        def run_bare() -> None:
            bare.append(checked(run_child(
                [sys.executable, BARE, server.base_url, str(n), str(args.jobs)]), "bare SDK"))

        def run_glmrun(runs: list[ChildRun] = glm, tree: Path | None = None) -> None:
            out = outs / f"out{next(folders)}"  # a new folder: nothing deleted (above)
            env = glmrun_env()
            if tree is not None:
                env["PYTHONPATH"] = str(tree)
            runs.append(checked(run_child(
                [GLMRUN, str(suite), "--base-url", server.base_url, "-o", str(out),
                 "-j", str(args.jobs), "--no-progress", "-q"],
                env=env,
            ), "glmrun"))
            statuses, markdown = transcript_statuses(out), len(list(out.glob("*.md")))
            if statuses != {"passed": n} or markdown != n:
                sys.exit(f"glmrun wrote {statuses} JSON and {markdown} Markdown transcripts, "
                         f"not {n} passed of each")

        warm_pool(server.base_url, min(n, 100), args.jobs)  # warm the server, untimed
        if args.disk_wait > 0:
            wait_for_quiet_disk(outs / "probes", args.disk_wait)
        for i in range(args.rounds):
            disk.append(disk_ms(outs / f"disk{i}", n))
            warm.append(warm_pool(server.base_url, n, args.jobs))
            for run in (run_bare, run_glmrun) if i % 2 == 0 else (run_glmrun, run_bare):
                run()
            if args.before is not None:
                run_glmrun(before, args.before)

    def ms(run: ChildRun) -> float:
        return run.cpu_s * 1000 / n

    ratios = [ms(g) / ms(b) for g, b in zip(glm, bare, strict=True)]
    for i, (g, b) in enumerate(zip(glm, bare, strict=True), 1):
        print(f"round {i}: glmrun {g.wall_s:.2f}s, {ms(g):.2f} ms CPU/conversation "
              f"({g.user_s * 1000 / n:.2f} user + {g.sys_s * 1000 / n:.2f} system); bare SDK "
              f"{b.wall_s:.2f}s, {ms(b):.2f} ms ({b.user_s * 1000 / n:.2f} + "
              f"{b.sys_s * 1000 / n:.2f}); ratio {ms(g) / ms(b):.2f}x "
              f"(wall {g.wall_s / b.wall_s:.2f}x); disk {disk[i - 1]:.2f} ms")
    if before:
        cpus = [ms(r) for r in before]
        b_ratios = [ms(r) / ms(b) for r, b in zip(before, bare, strict=True)]
        print(f"before ({args.before}): {statistics.median(cpus):.2f} ms CPU/conversation "
              f"(rounds {' '.join(f'{c:.2f}' for c in cpus)}), ratio "
              f"{statistics.median(cpus) / statistics.median(map(ms, bare)):.2f}x "
              f"({min(b_ratios):.2f}–{max(b_ratios):.2f}x), wall "
              f"{statistics.median(r.wall_s for r in before):.2f}s")
    g_cpu = statistics.median(ms(g) for g in glm)
    b_cpu = statistics.median(ms(b) for b in bare)
    g_wall = statistics.median(g.wall_s for g in glm)
    b_wall = statistics.median(b.wall_s for b in bare)
    w_wall = statistics.median(w for w, _ in warm)
    print(f"ideal {n * args.latency / args.jobs:.2f}s; strict: glmrun against the pool in this "
          f"process (Python started, SDK imported): wall {g_wall / w_wall:.2f}x, "
          f"{statistics.median(c for _, c in warm) * 1000 / n:.2f} ms CPU/request")
    print(f"spread over {args.rounds} rounds: glmrun {min(map(ms, glm)):.2f}–"
          f"{max(map(ms, glm)):.2f} ms, bare SDK {min(map(ms, bare)):.2f}–"
          f"{max(map(ms, bare)):.2f} ms, ratio {min(ratios):.2f}–{max(ratios):.2f}x "
          "(targets: CPU ≤ 1.3x, wall ≤ 1.2x)")
    if statistics.median(disk) > QUIET_MS:
        print(f"disk busy: creating a conversation's two files cost {statistics.median(disk):.2f} "
              f"ms of CPU (median; ≤ {QUIET_MS} ms when quiet): on ext4 without a journal, files "
              "deleted in the last minutes make every new file slower; re-run later")
    print(f"cpu per conversation: glmrun {g_cpu:.1f} ms, bare SDK {b_cpu:.1f} ms, "
          f"ratio {g_cpu / b_cpu:.2f}x (wall {g_wall / b_wall:.2f}x)")


if __name__ == "__main__":
    main()
