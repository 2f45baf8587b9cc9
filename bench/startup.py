"""Startup: `glmrun --help`; the time from starting `glmrun` on a one-file suite to its first
request arriving at the server (and the same for the bare SDK program, which pays the same
interpreter start and SDK import); `glmrun validate` on 500 generated conversation files. Best
of 5 wall times each, every run a fresh process.

    .venv/bin/python bench/startup.py [--files 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).parent))
from _common import GLMRUN, byte_compile_glmrun, glmrun_env, run_child, write_suite
from plain_server import API_PREFIX, Handler, Server

BARE = str(Path(__file__).parent / "bare_sdk.py")

FILE = """\
# a generated conversation file, {i} of {n}
name: convo_{i:04d}
description: Generated for the startup benchmark.
model: glm-4-flash
mode: {mode}
params: {{temperature: 0.{t}, max_tokens: 256}}
vars: {{user: user{i}, topic: topic{i}}}
messages:
  - role: system
    content: You are a concise assistant. Answer about {{{{ topic }}}}.
  - {{role: user, content: "Hello, I am {{{{ user }}}}."}}
  - {{role: assistant, content: "Hello {{{{ user }}}}, ask me anything."}}
  - role: user
    content: >-
      {{% if case_index is defined %}}Case {{{{ case_index }}}}: {{% endif %}}Tell me
      about {{{{ topic }}}}.
turns:
  - content: And what did I say my name was?
    expect:
      - contains: "{{{{ user }}}}"
expect:
  - max_tokens: 256
cases:
  - {{topic: rivers}}
  - {{topic: mountains}}
  - {{topic: "{{{{ user }}}}'s city"}}
"""


def write_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = FILE.format(i=i, n=n, mode=("sync", "stream", "async")[i % 3], t=1 + i % 9)
        (folder / f"convo_{i:04d}.yaml").write_text(text, encoding="utf-8")


def best_of(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        run = run_child(args, env=glmrun_env())
        if run.returncode != 0:
            sys.exit(f"{' '.join(args)} exited {run.returncode}:\n{run.stdout}\n{run.stderr}")
        times.append(run.wall_s)
    return min(times)


class FirstRequest(Handler):
    """plain_server's handler, noting when the first request of a run arrived."""

    arrived: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        self.arrived.append(time.perf_counter())
        super().do_POST()


def first_request(args: list[str], repeat: int) -> float:
    """Best of `repeat`: seconds from starting `args` to its first request at the server."""
    times = []
    for _ in range(repeat):
        FirstRequest.arrived.clear()
        t0 = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, env=glmrun_env())
        if proc.returncode != 0 or not FirstRequest.arrived:
            sys.exit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        times.append(FirstRequest.arrived[0] - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    byte_compile_glmrun()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "convos"
        write_files(folder, args.files)
        help_s = best_of([GLMRUN, "--help"], args.repeat)
        validate_s = best_of([GLMRUN, "validate", str(folder)], args.repeat)
        one = write_suite(Path(tmp) / "one", 1)
        with Server(("127.0.0.1", 0), FirstRequest) as httpd:
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{httpd.server_address[1]}{API_PREFIX}"
            glmrun_s = first_request([GLMRUN, str(one), "--base-url", url, "-o",
                                      str(Path(tmp) / "out"), "--no-progress", "-q"],
                                     args.repeat)
            bare_s = first_request([sys.executable, BARE, url, "1", "1"], args.repeat)
            httpd.shutdown()
    print(f"startup: glmrun --help {help_s:.3f}s (target ≤ 0.25s); glmrun validate on "
          f"{args.files} files {validate_s:.2f}s (target ≤ 2s); first request of a one-file "
          f"suite {glmrun_s:.3f}s (target ≤ 0.35s), bare SDK program {bare_s:.3f}s")


if __name__ == "__main__":
    main()
