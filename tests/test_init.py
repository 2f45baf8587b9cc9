"""`glmrun init`: what it writes validates, runs green with --mock, and its CI files are valid."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from fixtures.shell import shell, valid_workflow
from packaging.requirements import Requirement

from glmrun import REPOSITORY
from glmrun.cli.main import main
from glmrun.cli.scaffold import WORKFLOW, default_install
from glmrun.load.project import load_project

REPO = Path(__file__).resolve().parent.parent
CREATED = [
    "convos/greeting.yaml", "convos/prompts/system.md", "convos/_data/users.csv",
    "schemas/convo.schema.json", "glmrun.toml", ".gitignore", ".pre-commit-config.yaml",
    WORKFLOW,
]


def init(root: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["init", str(root), *args], catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "prompts"
    result = init(root, "--install", "glmrun @ git+https://github.com/glmrun/glmrun@" + "0" * 40)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"created {root / name}" for name in CREATED]
    assert result.stderr == f"next: cd {root} && glmrun convos/ --mock\n"
    return root


def test_init_writes_a_suite_that_validates_and_passes_with_mock(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    runner = CliRunner()
    result = runner.invoke(main, ["validate", "convos/"])
    assert (result.exit_code, result.stdout) == (0, "ok: 1 file valid\n")
    result = runner.invoke(main, ["convos/", "--mock", "--no-progress"])
    assert result.exit_code == 0, result.output
    out = project / "glmrun-out"  # from the glmrun.toml init wrote
    found = {p.name: json.loads(p.read_text("utf-8")) for p in out.glob("*.json")
             if p.name != "run.json"}  # the run's manifest
    assert len(found) == 2 and {t["status"] for t in found.values()} == {"passed"}
    assert json.loads((out / "run.json").read_text("utf-8"))["totals"]["passed"] == 2
    assert len(list(out.glob("*.md"))) == 2
    assert load_project(project).settings == {"out": Path("glmrun-out"),
                                              "formats": ["json", "md"], "concurrency": 4}


def test_the_modeline_finds_the_schema_written_next_to_the_suite(project: Path) -> None:
    convo = project / "convos" / "greeting.yaml"
    first = convo.read_text("utf-8").splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match
    target = (convo.parent / match.group(1)).resolve()
    assert target == (project / "schemas" / "convo.schema.json").resolve()
    packaged = (files("glmrun") / "schemas" / "convo.schema.json").read_bytes()
    assert target.read_bytes() == packaged
    jsonschema.Draft202012Validator(json.loads(packaged)).validate(
        yaml.safe_load(convo.read_text("utf-8")))


def test_init_never_overwrites(project: Path) -> None:
    (project / "convos" / "greeting.yaml").write_text("mine\n", "utf-8")
    (project / "glmrun.toml").unlink()
    result = init(project)
    assert result.exit_code == 2
    assert result.stderr == (f"error: {project} already has .github/workflows/glmrun.yml, "
                             ".gitignore, .pre-commit-config.yaml, convos/_data/users.csv, "
                             "convos/greeting.yaml, convos/prompts/system.md, "
                             "schemas/convo.schema.json: nothing written (init only creates "
                             "files)\n")
    assert (project / "convos" / "greeting.yaml").read_text("utf-8") == "mine\n"
    assert not (project / "glmrun.toml").exists()


@pytest.mark.timeout(90)
@pytest.mark.slow
def test_the_pre_commit_hook_is_valid_runs_and_catches_a_bad_file(
        project: Path, tmp_path: Path) -> None:
    from pre_commit.clientlib import load_config

    config = load_config(project / ".pre-commit-config.yaml")  # pre-commit's own validator
    (hook,) = config["repos"][0]["hooks"]
    assert hook["id"] == "glmrun-validate"
    env = {"PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    assert shell("git init -q && git add -A", project).returncode == 0
    ran = shell(f"{sys.executable} -m pre_commit run --all-files", project, **env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r"^glmrun validate\.+Passed$", ran.stdout, re.M), ran.stdout
    (project / "convos" / "bad.yaml").write_text("model: glm-4-flash\nmessages: []\n", "utf-8")
    shell("git add -A", project)
    ran = shell(f"{sys.executable} -m pre_commit run --all-files", project, **env)
    assert ran.returncode == 1
    assert "convos/bad.yaml:2:11: messages: [] should be non-empty" in ran.stdout, ran.stdout
    ignored = shell("git check-ignore glmrun-out/x.json .env junit.xml", project)
    assert ignored.stdout.split() == ["glmrun-out/x.json", ".env", "junit.xml"]


@pytest.mark.slow
def test_the_workflow_is_valid_and_its_steps_run(project: Path) -> None:
    text = (project / WORKFLOW).read_text("utf-8")
    with pytest.raises(jsonschema.ValidationError):  # the schema does catch a wrong key
        valid_workflow(text.replace("runs-on:", "run-on:"))
    workflow = valid_workflow(text)
    steps = workflow["jobs"]["suite"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    install = runs.pop(0)
    spec = re.fullmatch(r'pip install "(.+)"', install)
    assert spec and Requirement(spec.group(1)).url == f"git+{REPOSITORY}@{'0' * 40}"
    for step in steps[1 + next(i for i, s in enumerate(steps) if s.get("run") == install):]:
        if "run" not in step:  # what CI runs after the install, in the suite's folder
            continue
        env = {k: v for k, v in step.get("env", {}).items() if "${{" not in v}
        done = shell(step["run"], project, **env)
        assert done.returncode == 0, step["run"] + done.stdout + done.stderr
    suite_run = next(s for s in steps if "--mock" in s.get("run", ""))
    assert suite_run["env"]["GLMRUN_ALLOW_HOSTS"] == ""  # a PR's glmrun.toml cannot widen it
    uploaded = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    for path in uploaded["with"]["path"].split():
        assert (project / path).exists(), path


def test_ci_installs_from_the_git_url_at_this_checkouts_commit(tmp_path: Path) -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert default_install() == f"glmrun @ git+{REPOSITORY}@{head}"
    result = init(tmp_path / "p", "--install", "./vendor/glmrun")
    assert result.exit_code == 0
    assert '- run: pip install "./vendor/glmrun"\n' in (tmp_path / "p" / WORKFLOW).read_text()
