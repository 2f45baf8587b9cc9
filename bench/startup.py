"""Startup: `glmrun --help`, and `glmrun validate` on 500 generated conversation files; best of
5 wall times each, every run a fresh process.

    .venv/bin/python bench/startup.py [--files 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GLMRUN, glmrun_env, run_child

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "convos"
        write_files(folder, args.files)
        help_s = best_of([GLMRUN, "--help"], args.repeat)
        validate_s = best_of([GLMRUN, "validate", str(folder)], args.repeat)
    print(f"startup: glmrun --help {help_s:.3f}s (target ≤ 0.25s); glmrun validate on "
          f"{args.files} files {validate_s:.2f}s (target ≤ 2s)")


if __name__ == "__main__":
    main()
