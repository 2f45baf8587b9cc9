"""Overhead: glmrun (the real CLI, in a child process, startup included) against a bare thread
pool calling the zhipuai SDK directly, for the same 1,000 single-turn conversations against the
same emulator (latency 100 ms, its own process) in the same run.

    .venv/bin/python bench/overhead.py [--n 1000] [--latency 0.1] [-j 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GLMRUN, KEY, MODEL, emulator, glmrun_env, prompts, run_child, write_suite


def bare_sdk(base_url: str, n: int, jobs: int) -> tuple[float, float]:
    """Wall and CPU time of n chat.completions.create calls from a pool of `jobs` threads.

    The client gets the same connection pool size glmrun gives its own (the SDK's default
    keeps only 10 connections alive, which would make the baseline slower than it need be).
    """
    import httpx
    from zhipuai import ZhipuAI

    t0, c0 = time.perf_counter(), time.process_time()
    http = httpx.Client(limits=httpx.Limits(max_connections=jobs, max_keepalive_connections=jobs))
    client = ZhipuAI(api_key=KEY, base_url=base_url, max_retries=0, http_client=http)

    def one(text: str) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}]
        )
        return str(reply.choices[0].message.content)

    with ThreadPoolExecutor(jobs) as pool:
        replies = list(pool.map(one, prompts(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    http.close()
    assert len(replies) == n and all(replies)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("-j", "--jobs", type=int, default=50)
    args = ap.parse_args()

    import zhipuai  # noqa: F401  -- imported before timing: the baseline pays no import

    with tempfile.TemporaryDirectory() as tmp, emulator(args.latency) as emu:
        suite = write_suite(Path(tmp) / "suite", args.n)
        # warm the emulator and the page cache once, untimed
        bare_sdk(emu.base_url, min(args.n, 100), args.jobs)
        bare, bare_cpu = bare_sdk(emu.base_url, args.n, args.jobs)
        run = run_child(
            [GLMRUN, str(suite), "--base-url", emu.base_url, "-o", str(Path(tmp) / "out"),
             "-j", str(args.jobs), "--format", "json", "--no-progress", "-q"],
            env=glmrun_env(),
        )
        if run.returncode != 0:
            sys.exit(f"glmrun exited {run.returncode}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        ideal = args.n * args.latency / args.jobs
        inner = run.stdout.strip().splitlines()[-1]  # "tokens: N   wall time: Xs" (the run)
        print(f"ideal {ideal:.2f}s; bare SDK {bare:.2f}s wall, {bare_cpu * 1000 / args.n:.2f} "
              f"ms CPU/request; glmrun {run.wall_s:.2f}s wall ({inner.split('   ')[-1]} without "
              f"startup and planning), CPU {run.user_s * 1000 / args.n:.2f} ms user + "
              f"{run.sys_s * 1000 / args.n:.2f} ms system per conversation")
        print(f"overhead: glmrun {run.wall_s:.2f}s vs bare SDK {bare:.2f}s = "
              f"{run.wall_s / bare:.2f}× (target ≤ 1.25×); "
              f"CPU {run.cpu_s * 1000 / args.n:.2f} ms/conversation")


if __name__ == "__main__":
    main()
