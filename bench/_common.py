"""Helpers shared by the benchmarks: generated suites, the emulator in its own process, and
glmrun run as a child process with its wall time, CPU time and peak RSS measured."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
GLMRUN = str(BIN / "glmrun")
KEY = "bench-key-0123456789abcdef"  # long: glmrun redacts the key from transcripts
MODEL = "glm-4-flash"


def byte_compile_glmrun() -> None:
    """Byte-compile glmrun's modules, as installing a wheel does (pip compiles site-packages, so
    the SDK's are), so a run does not compile them from source when the environment sets
    PYTHONDONTWRITEBYTECODE (or the tree is fresh): ~0.15 s at every start otherwise."""
    import compileall

    import glmrun

    compileall.compile_dir(Path(glmrun.__file__).parent, quiet=1)


def write_suite(folder: Path, n: int, name: str = "bench") -> Path:
    """One conversation file with n `cases` rows: n single-turn conversations."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    rows = "".join(f"  - {{n: {i}}}\n" for i in range(n))
    path.write_text(
        f"model: {MODEL}\n"
        "messages:\n"
        "  - {role: user, content: \"question number {{ n }}\"}\n"
        f"cases:\n{rows}",
        encoding="utf-8",
    )
    return path


def prompts(n: int) -> Iterator[str]:
    """The user messages of write_suite's conversations, for callers of the bare SDK."""
    return (f"question number {i}" for i in range(n))


@dataclass
class Emulator:
    base_url: str
    process: subprocess.Popen[str]


@contextmanager
def emulator(latency_s: float = 0.0, concurrency_limit: int | None = None) -> Iterator[Emulator]:
    """`glmrun mock-server` in a child process on a free loopback port."""
    args = [GLMRUN, "mock-server", "--port", "0", "--latency", str(latency_s)]
    if concurrency_limit is not None:
        args += ["--concurrency-limit", str(concurrency_limit)]
    with _server(args) as server:
        yield server


@contextmanager
def plain_server(latency_s: float) -> Iterator[Emulator]:
    """bench/plain_server.py (HTTP/1.0, one connection per request) in a child process."""
    script = str(Path(__file__).parent / "plain_server.py")
    with _server([sys.executable, script, "--latency", str(latency_s)]) as server:
        yield server


@contextmanager
def _server(args: list[str]) -> Iterator[Emulator]:
    """A server child process that prints its base URL on its first line; SIGINT ends it."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://\S+)", line)
        if not m:
            raise RuntimeError(f"{args[1]} did not start: {line!r}")
        yield Emulator(m.group(1), proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ChildRun:
    returncode: int
    wall_s: float
    cpu_s: float  # user + system of the child (and anything it started)
    user_s: float
    sys_s: float
    maxrss_mb: float  # peak RSS of the largest child waited for so far (see measure_child)
    stdout: str
    stderr: str


def run_child(args: Sequence[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> ChildRun:
    """Run a command, timing it and reading its CPU time from RUSAGE_CHILDREN."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, sys_ = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return ChildRun(proc.returncode, wall, user + sys_, user, sys_, after.ru_maxrss / 1024,
                    proc.stdout, proc.stderr)


def measure_child(args: Sequence[str], env: dict[str, str] | None = None) -> ChildRun:
    """run_child in a fresh Python process, so ru_maxrss is this child's peak alone.

    RUSAGE_CHILDREN's ru_maxrss is the largest of all children ever waited for; a fresh
    intermediate process that runs just one command reports exactly that command's peak.
    """
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from _common import run_child; "
            "print(json.dumps(vars(run_child(json.loads(sys.argv[2])))))")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(list(args))],
        capture_output=True, text=True, env=env, check=True,
    )
    return ChildRun(**json.loads(proc.stdout.strip().splitlines()[-1]))


def glmrun_env(base_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ZHIPUAI_API_KEY", "ZHIPU_API_KEY", "ZHIPUAI_BASE_URL")}
    env["ZHIPUAI_API_KEY"] = KEY
    if base_url:
        env["ZHIPUAI_BASE_URL"] = base_url
    return env


def transcript_statuses(out: Path) -> dict[str, int]:
    """Count transcripts in `out` by status (one file at a time; run.json is the manifest)."""
    counts: dict[str, int] = {}
    for p in out.glob("*.json"):
        if p.name == "run.json":  # the run's manifest, not a transcript
            continue
        status = json.loads(p.read_text("utf-8")).get("status", "?")
        counts[status] = counts.get(status, 0) + 1
    return counts
