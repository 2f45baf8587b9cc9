"""`glmrun init`: a suite that runs as created — folders, the schema, CI, pre-commit, defaults.

Every file it writes is checked by the tests: the suite validates and passes with `--mock`,
the modeline finds the schema written next to it, the pre-commit config passes pre-commit's
own validator and runs, the workflow validates against GitHub's published workflow schema.
"""

from __future__ import annotations

import subprocess
from importlib.resources import files
from pathlib import Path

from glmrun import REPOSITORY, errors

WORKFLOW = ".github/workflows/glmrun.yml"

GREETING = """\
# yaml-language-server: $schema=../schemas/convo.schema.json
# Run it: glmrun convos/ --mock   (the built-in emulator: no key, no network)
description: Greet the assistant once per row of _data/users.csv.
model: glm-4-flash
cases: _data/users.csv          # files and folders starting with _ are data, not conversations
messages:
  - role: system
    content: "{% include 'prompts/system.md' %}"
  - role: user
    content: 你好，我是{{ name }}。
expect:
  - contains: "{{ name }}"
    name: the reply names the user
"""

SYSTEM_PROMPT = "你是一个友好的助手。回答要简短，并且总是用{{ language }}回答。\n"

USERS = "id,name,language\nxiaoming,小明,中文\nann,Ann,English\n"

PROJECT = """\
# glmrun's defaults for this project: the command line and GLMRUN_* variables win over them.
out = "glmrun-out"
formats = ["json", "md"]
concurrency = 4
"""

GITIGNORE = """\
# glmrun's outputs
glmrun-out/
junit.xml
.glmrun-cache/
# the API key (ZHIPUAI_API_KEY=...) lives here: never commit it
.env
"""

PRE_COMMIT = """\
# Validate conversation files on every commit (schema + templates; no network, no key).
# It runs the glmrun installed in your environment: `pre-commit install` once, in that venv.
repos:
  - repo: local
    hooks:
      - id: glmrun-validate
        name: glmrun validate
        entry: glmrun validate
        language: system
        files: ^convos/.*\\.ya?ml$
        exclude: (^|/)[_.]
"""

WORKFLOW_TEXT = """\
# Validate and run the suite on every push. Against the emulator (--mock) it needs no secret;
# with a ZHIPUAI_API_KEY repository secret, drop --mock to run against GLM itself.
name: prompts
on: [push, pull_request]
jobs:
  suite:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - run: pip install "{install}"
      - run: glmrun validate convos/
      - run: glmrun convos/ --mock --junit junit.xml
        env:
          ZHIPUAI_API_KEY: ${{{{ secrets.ZHIPUAI_API_KEY }}}}
          # where the key may go beyond Zhipu's hosts: set here, so a pull request's
          # glmrun.toml cannot widen it (name your gateway here if you use one)
          GLMRUN_ALLOW_HOSTS: ""
      - if: always()
        uses: actions/upload-artifact@v4
        with:
          name: transcripts
          path: |
            glmrun-out/
            junit.xml
"""


def default_install() -> str:
    """What CI's pip installs: glmrun from its git URL, at this checkout's commit if known."""
    checkout = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--verify", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    ours = (checkout / "glmrun" / "cli" / "scaffold.py").is_file()
    pin = f"@{sha}" if len(sha) == 40 and ours else ""
    return f"glmrun @ git+{REPOSITORY}{pin}"


def scaffold_files(install: str) -> dict[str, str]:
    """Relative path -> text of every file `glmrun init` writes."""
    schema = (files("glmrun") / "schemas" / "convo.schema.json").read_text("utf-8")
    return {
        "convos/greeting.yaml": GREETING,
        "convos/prompts/system.md": SYSTEM_PROMPT,
        "convos/_data/users.csv": USERS,
        "schemas/convo.schema.json": schema,
        "glmrun.toml": PROJECT,
        ".gitignore": GITIGNORE,
        ".pre-commit-config.yaml": PRE_COMMIT,
        WORKFLOW: WORKFLOW_TEXT.format(install=install),
    }


def init_project(root: Path, install: str | None = None) -> list[Path]:
    """Write the scaffold into root (made if missing); refuses to overwrite any file."""
    planned = scaffold_files(install or default_install())
    existing = sorted(name for name in planned if (root / name).exists())
    if existing:
        raise errors.InputError(f"{root} already has {', '.join(existing)}: nothing written "
                                "(init only creates files)")
    written = []
    for name, text in planned.items():
        path = root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise errors.InputError(f"cannot write {path}: {exc.strerror}") from exc
        written.append(path)
    return written
