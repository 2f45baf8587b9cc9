"""The suite's files: `glmrun validate` (every problem, call nothing), `glmrun schema`,
`glmrun init` (a new suite; see scaffold)."""

from __future__ import annotations

from pathlib import Path

import click

from glmrun import errors
from glmrun.cli.common import fail, parse_vars


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--var", "vars_", multiple=True, metavar="NAME=VALUE",
              help="Set a template variable for the check (repeatable).")
def validate(paths: tuple[Path, ...], vars_: tuple[str, ...]) -> None:
    """Check files against the schema and render every template; call nothing."""
    from glmrun.load.spec import discover
    from glmrun.plan.checking import validate_paths

    try:
        files = discover(list(paths))
    except errors.InputError as exc:
        fail(exc)
        return
    hints: list[str] = []
    problems = validate_paths(list(paths), parse_vars(vars_), hints)
    for hint in hints:
        click.echo(f"warning: {hint}", err=True)
    if problems:
        fail(errors.SpecError(problems))
    click.echo(f"ok: {len(files)} file{'s' if len(files) != 1 else ''} valid")


@click.command()
@click.option("--transcript", is_flag=True, help="Print the transcript schema instead.")
def schema(transcript: bool) -> None:
    """Print the JSON Schema of conversation files (for editors)."""
    from importlib.resources import files

    name = "transcript.schema.json" if transcript else "convo.schema.json"
    click.echo((files("glmrun") / "schemas" / name).read_text(encoding="utf-8"), nl=False)



@click.command("init")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False), default=Path("."))
@click.option("--install", "install", metavar="PIP_SPEC",
              help="What the CI workflow's pip installs (a git URL or a path). Default: glmrun "
                   "from its git repository, at this glmrun's commit when it runs from a "
                   "checkout.")
def init_command(folder: Path, install: str | None) -> None:
    """Start a suite in FOLDER: convos/, the schema, glmrun.toml, CI, pre-commit, .gitignore."""
    from glmrun.cli.scaffold import init_project

    try:
        written = init_project(folder, install)
    except errors.GlmrunError as exc:
        fail(exc)
        return
    for path in written:
        click.echo(f"created {path}")
    where = "" if folder == Path(".") else f"cd {folder} && "
    click.echo(f"next: {where}glmrun convos/ --mock", err=True)
