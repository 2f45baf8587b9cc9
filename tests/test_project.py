"""Project defaults: [tool.glmrun] / glmrun.toml, the GLMRUN_* environment, the .env key.

Precedence, end to end: command line > environment > project file > built-in default.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fixtures.e2e.harness import KEY, REPO, write

from glmrun import api as session
from glmrun.cli.main import main
from glmrun.load.project import find_project_file, load_project
from glmrun.mock import MockConfig, MockServer

LEVELS = ("default", "project", "env", "cli")
PROJECT_TOML = """\
out = "p-out"
formats = ["json"]
concurrency = 3
model = "glm-4-air"
cache = "p-cache"
"""
ENV = {"GLMRUN_OUT": "e-out", "GLMRUN_FORMATS": "json md", "GLMRUN_CONCURRENCY": "5",
       "GLMRUN_MODEL": "glm-4-plus", "GLMRUN_CACHE": "e-cache"}
CLI = ["-o", "c-out", "--format", "json", "-j", "6", "--model", "glm-4-long",
       "--cache", "c-cache"]
# What wins at each level: (out, formats written, model, cache folder, concurrency)
EXPECTED = {
    "default": ("glmrun-out", {".json", ".md"}, "glm-4-flash", None, 4),
    "project": ("p-out", {".json"}, "glm-4-air", "p-cache", 3),
    "env": ("e-out", {".json", ".md"}, "glm-4-plus", "e-cache", 5),
    "cli": ("c-out", {".json"}, "glm-4-long", "c-cache", 6),
}


def suite(root: Path) -> None:
    (root / "convos").mkdir(parents=True)
    shutil.copy(REPO / "convos" / "greeting.yaml", root / "convos")


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def set_level(level: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Set every level up to `level`; the command-line options to add."""
    upto = LEVELS.index(level)
    if upto >= 1:
        (root / "glmrun.toml").write_text(PROJECT_TOML, "utf-8")
    if upto >= 2:
        for name, value in ENV.items():
            monkeypatch.setenv(name, value)
    return CLI if upto >= 3 else []


@pytest.mark.parametrize("level", LEVELS)
def test_the_highest_level_that_sets_a_value_wins(level: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    suite(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    extra = set_level(level, tmp_path, monkeypatch)
    out, formats, model, cache, _ = EXPECTED[level]
    result = invoke("convos/", "--mock", "--no-progress", *extra)
    assert result.exit_code == 0, result.output
    assert result.stderr.endswith(f"transcripts: {out}/\n")
    assert {p.suffix for p in (tmp_path / out).iterdir()} == formats
    assert json.loads((tmp_path / out / "greeting.json").read_text("utf-8"))["model"] == model
    made = {p.name for p in tmp_path.iterdir() if p.name.endswith("-cache")}
    assert made == ({cache} if cache else set())
    if cache:
        assert any((tmp_path / cache).rglob("*.json"))  # the reply was recorded there


@pytest.mark.parametrize("level", LEVELS)
def test_concurrency_follows_the_same_order(level: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    suite(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    extra = set_level(level, tmp_path, monkeypatch)
    seen: dict[str, Any] = {}

    def capture(plans: Any, settings: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        seen.update(concurrency=options.concurrency, pool=settings.pool_size)
        raise SystemExit(0)

    monkeypatch.setattr(session, "run_plans", capture)
    invoke("convos/", "--mock", "--no-progress", *extra)
    want = EXPECTED[level][4]
    assert seen == {"concurrency": want, "pool": want}


def test_pyproject_tool_table_is_read_from_a_subfolder_with_paths_from_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite(tmp_path)
    write(tmp_path, "pyproject.toml", """\
        [project]
        name = "prompts"

        [tool.glmrun]
        out = "build/transcripts"
        formats = ["md"]
        """)
    monkeypatch.chdir(tmp_path / "convos")
    result = invoke(".", "--mock", "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "build" / "transcripts").iterdir()) == [
        "greeting.md", "run.json"]
    assert not (tmp_path / "convos" / "build").exists()


def test_glmrun_toml_wins_over_pyproject_in_the_same_folder(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.glmrun]\nout = "a"\n', "utf-8")
    assert find_project_file(tmp_path) == tmp_path / "pyproject.toml"
    (tmp_path / "glmrun.toml").write_text('out = "b"\n', "utf-8")
    assert find_project_file(tmp_path) == tmp_path / "glmrun.toml"
    assert load_project(tmp_path).settings == {"out": Path("b")}


def test_a_pyproject_without_a_glmrun_table_is_not_a_project_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.ruff]\nline-length = 100\n', "utf-8")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert find_project_file(sub) is None or not find_project_file(sub).is_relative_to(tmp_path)


def test_a_wrong_project_file_is_an_input_error_naming_every_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite(tmp_path)
    write(tmp_path, "pyproject.toml", """\
        [tool.glmrun]
        concurrency = 0
        formats = ["html"]
        outdir = "x"
        allow_hosts = ["https://gw.example/v4"]
        """)
    monkeypatch.chdir(tmp_path)
    result = invoke("convos/", "--mock")
    assert result.exit_code == 2
    path = tmp_path / "pyproject.toml"
    assert result.stderr.splitlines() == [
        f"{path}: tool.glmrun: unknown key 'outdir' (known: out, formats, concurrency, model, "
        "cache, sdk, region, allow_hosts)",
        f"{path}: tool.glmrun.allow_hosts.0: 'https://gw.example/v4' does not match "
        "'^([A-Za-z0-9.-]+|\\\\[[0-9A-Fa-f:.]+\\\\])$'",
        f"{path}: tool.glmrun.concurrency: 0 is less than the minimum of 1",
        f"{path}: tool.glmrun.formats.0: 'html' is not one of ['json', 'md']",
        "4 problems found",
    ]
    (tmp_path / "pyproject.toml").write_text("[tool.glmrun\n", "utf-8")
    result = invoke("convos/", "--mock")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}: not TOML: ")


def test_schema_and_help_never_read_the_project_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "glmrun.toml").write_text("not toml at all [", "utf-8")
    monkeypatch.chdir(tmp_path)
    assert invoke("schema").exit_code == 0
    assert invoke("--help").exit_code == 0
    assert invoke("convos/").exit_code == 2


# -- the .env key -----------------------------------------------------------------------------


@pytest.fixture
def keyed() -> Iterator[MockServer]:
    """The emulator answering 401 to any key but KEY."""
    with MockServer(MockConfig(api_key=KEY)) as srv:
        yield srv


def test_the_key_comes_from_the_project_env_and_is_never_printed(
        keyed: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = keyed
    suite(tmp_path)
    write(tmp_path, "glmrun.toml", 'out = "out"\n')
    write(tmp_path, ".env", f"# the key for this project\nZHIPUAI_API_KEY={KEY}\n")
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "convos/echo.yaml", """\
        model: glm-4-flash
        messages: [{role: user, content: "my key is {{ key }}"}]
        """)
    result = invoke("convos/", "--base-url", server.base_url, "--var", f"key={KEY}", "-v",
                    "--junit", "junit.xml", "--no-progress")
    assert result.exit_code == 0, result.output  # the emulator accepts KEY only
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".env"]
    assert "my key is ***" in (tmp_path / "out" / "echo.md").read_text("utf-8")
    for blob in [result.stdout.encode(), result.stderr.encode(), *written]:
        assert KEY.encode() not in blob


def test_the_environment_key_wins_over_the_env_file(
        keyed: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = keyed
    suite(tmp_path)
    write(tmp_path, "glmrun.toml", 'out = "out"\n')
    monkeypatch.chdir(tmp_path)
    args = ["convos/", "--base-url", server.base_url, "--no-progress", "--retries", "0"]
    write(tmp_path, ".env", "ZHIPUAI_API_KEY=wrong.key\n")
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    assert invoke(*args).exit_code == 0
    monkeypatch.delenv("ZHIPUAI_API_KEY")
    result = invoke(*args)
    assert result.exit_code == 3  # the .env's wrong key was used: 401 stops the run
    (tmp_path / ".env").unlink()
    result = invoke(*args)
    assert result.exit_code == 2
    assert "no API key" in result.stderr


def test_the_env_file_is_read_next_to_the_project_file_only(tmp_path: Path) -> None:
    write(tmp_path, "glmrun.toml", "")
    write(tmp_path, ".env", "ZHIPU_API_KEY=abc.def\nOTHER=1\n")
    sub = tmp_path / "convos"
    write(sub, ".env", "ZHIPU_API_KEY=not.this\n")
    project = load_project(sub)
    assert project.file == tmp_path / "glmrun.toml"
    assert project.dotenv["ZHIPU_API_KEY"] == "abc.def"
    assert session.api_key(session.BackendSettings(dotenv=project.dotenv)) == "abc.def"
