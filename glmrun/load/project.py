"""Project defaults: `[tool.glmrun]` in pyproject.toml or a glmrun.toml, and the key in a .env.

Settings resolve as: command line > environment (GLMRUN_*) > project file > built-in default.
The CLI hands the project file's values to click as its `default_map`, which click consults
after the command line and the options' environment variables, so one mechanism orders all
four. The .env next to the project file supplies the API key when the environment has none.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmrun import errors

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROJECT_FILE = "glmrun.toml"
PYPROJECT = "pyproject.toml"
DOTENV = ".env"
PATH_KEYS = ("out", "cache")  # relative to the project file's folder
# Project keys -> `glmrun run` parameter names. `allow_hosts` is not one: --allow-host and
# $GLMRUN_ALLOW_HOSTS add up, so glmrun.safety.baseurl orders the three levels itself.
RUN_PARAMS = {"out": "out_dir", "formats": "formats", "concurrency": "concurrency",
              "model": "models", "cache": "cache_dir", "sdk": "sdk", "region": "region"}


@dataclass(frozen=True)
class Project:
    """The project file found for a folder (if any), its validated settings and its .env."""

    file: Path | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    dotenv: Mapping[str, str] = field(default_factory=dict)

    @property
    def allow_hosts(self) -> tuple[str, ...]:
        """The hosts the key may go to when neither --allow-host nor $GLMRUN_ALLOW_HOSTS says."""
        return tuple(self.settings.get("allow_hosts") or ())

    def run_defaults(self) -> dict[str, Any]:
        """The settings as defaults of `glmrun run`'s parameters (click's default_map)."""
        defaults = {RUN_PARAMS[key]: value for key, value in self.settings.items()
                    if key in RUN_PARAMS}
        if isinstance(defaults.get("models"), str):  # --model is repeatable: a matrix
            defaults["models"] = [defaults["models"]]
        return defaults


def find_project_file(start: Path) -> Path | None:
    """The nearest glmrun.toml, or pyproject.toml with a [tool.glmrun] table, at or above start.

    In one folder glmrun.toml wins; the search stops at the first folder that has either.
    """
    for folder in (start, *start.parents):
        own = folder / PROJECT_FILE
        if own.is_file():
            return own
        pyproject = folder / PYPROJECT
        if pyproject.is_file() and "glmrun" in _read_toml(pyproject).get("tool", {}):
            return pyproject
    return None


def load_project(start: Path | None = None) -> Project:
    """The project for the folder `start` (default: the current one): settings and .env."""
    start = (start or Path.cwd()).absolute()
    path = find_project_file(start)
    if path is None:
        return Project(dotenv=read_dotenv(start / DOTENV))
    data = _read_toml(path)
    table = data if path.name == PROJECT_FILE else data["tool"]["glmrun"]
    where = "" if path.name == PROJECT_FILE else "tool.glmrun"
    _validate(table, path, where)
    settings = dict(table)
    for key in PATH_KEYS:
        if key in settings:
            settings[key] = _near(path.parent / settings[key], start)
    return Project(file=path, settings=settings, dotenv=read_dotenv(path.parent / DOTENV))


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a .env file sets (none if there is no file); nothing enters os.environ."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        problem = errors.Problem(str(path), None, None, "", f"not TOML: {exc}")
        raise errors.SpecError([problem]) from exc
    except OSError as exc:
        raise errors.InputError(f"cannot read {path}: {exc.strerror}") from exc


def _validate(table: Any, path: Path, where: str) -> None:
    """The project schema is the one validator of the table; every problem at once."""
    from glmrun.load.schema import load_schema, surely_valid

    if surely_valid(table, "project"):
        return
    import jsonschema

    schema = load_schema("project")
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(table), key=lambda e: list(map(str, e.path))):
        keys = ".".join(str(p) for p in err.absolute_path)
        reason = err.message
        if err.validator == "additionalProperties":
            unknown = sorted(set(table) - set(schema["properties"]))
            reason = (f"unknown key{'s' if len(unknown) > 1 else ''} "
                      f"{', '.join(map(repr, unknown))} (known: {', '.join(schema['properties'])})")
        dotted = ".".join(p for p in (where, keys) if p)
        problems.append(errors.Problem(str(path), None, None, dotted, reason))
    if problems:
        raise errors.SpecError(problems)


def _near(path: Path, start: Path) -> Path:
    """path as the user would write it from start: relative when below it."""
    try:
        return path.relative_to(start)
    except ValueError:
        return path
