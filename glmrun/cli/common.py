"""What the commands share: a glmrun error shown as a message and an exit code, the redactor
of the keys in reach, the project found by `main` (its .env, its allowed hosts), `--var`, and
the output-folder option type."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from typing import Any

import click

from glmrun import errors


def fail(exc: errors.GlmrunError, redactor: Any = None) -> None:
    """Print a glmrun error the way a user can act on it (no secret in it), and exit with its
    code."""
    redactor = redactor or env_redactor()
    text = f"error: {exc}" if not isinstance(exc, errors.SpecError) else str(exc)
    click.echo(redactor.text(text), err=True)
    if isinstance(exc, errors.SpecError):
        n = len(exc.problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
    sys.exit(exc.exit_code)



def env_redactor() -> Any:
    """The redactor of the keys in the environment and the project's .env (what a run adds:
    see api.run_redactor)."""
    from glmrun.safety.redaction import Redactor, env_keys

    with contextlib.suppress(RuntimeError):  # outside a command: no project
        return Redactor([*env_keys(), *env_keys(project_dotenv())])
    return Redactor(env_keys())


def parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"'{item}' is not of the form NAME=VALUE", param_hint="--var")
        out[key.strip()] = value
    return out



FILE_SUFFIXES = (".html", ".json", ".md", ".xml")  # an output folder named so is a slip


class OutFolder(click.Path):
    """An output folder (-o): refuses an existing file, and a new name that only a file would
    have (report.html), instead of silently making a folder of that name."""

    def __init__(self, hint: str) -> None:
        super().__init__(path_type=Path, file_okay=False)
        self.hint = hint

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        path = Path(value)
        if path.exists() and not path.is_dir():
            self.fail(f"{str(path)!r} is a file: -o names a folder. {self.hint}", param, ctx)
        if not path.exists() and path.suffix.lower() in FILE_SUFFIXES:
            self.fail(f"{str(path)!r} looks like a file name, but -o names a folder (made if "
                      f"missing). {self.hint}", param, ctx)
        return super().convert(value, param, ctx)


def import_quietly(module: str) -> None:
    """Import the SDK ahead (it takes ~0.15 s); a missing one is reported when it is used."""
    with contextlib.suppress(ImportError):
        importlib.import_module(module)


SDK_OPTION = click.option(
    "--sdk", type=click.Choice(["zhipuai", "zai"]), default="zhipuai", show_default=True,
    envvar="GLMRUN_SDK", show_envvar=True,
    help="The SDK that calls the API (zai: pip install 'glmrun[zai]').")
REGION_OPTION = click.option(
    "--region", type=click.Choice(["cn", "intl"]), default="cn", show_default=True,
    envvar="GLMRUN_REGION", show_envvar=True,
    help="cn: open.bigmodel.cn, key $ZHIPUAI_API_KEY; intl: api.z.ai, key $ZAI_API_KEY, base "
         "URL $ZAI_BASE_URL.")


def project_dotenv() -> dict[str, str]:
    """The project's .env variables (the key), as found by `main`."""
    project = click.get_current_context().find_root().obj
    return dict(project.dotenv) if project is not None else {}


def project_hosts() -> tuple[str, ...]:
    """The project file's allow_hosts, as found by `main`."""
    project = click.get_current_context().find_root().obj
    return project.allow_hosts if project is not None else ()
