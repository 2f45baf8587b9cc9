"""The command line: parse, call the core, turn errors into messages and exit codes.

Exit codes: 0 every conversation passed; 1 an expectation failed (or `diff` found a
regression); 2 bad usage or an invalid file; 3 a conversation could not be completed;
130 interrupted. Heavy modules (the SDK, rich, jsonschema) are imported inside commands so
`glmrun --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from glmrun import __version__, errors
from glmrun.cli.batch import batch_group
from glmrun.cli.common import fail
from glmrun.cli.results import diff, merge_command, report, view
from glmrun.cli.run import RUN_COMMAND, run_command
from glmrun.cli.suite import init_command, schema, validate

NO_PROJECT_COMMANDS = ("schema", "init", "mock-server")  # never read a project file


class DefaultToRun(click.Group):
    """`glmrun PATH...` means `glmrun run PATH...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            slip = self._misspelled(args[0])
            if slip is not None:
                raise click.UsageError(
                    f"no such command {args[0]!r} — did you mean {slip!r}?", ctx)
            args = [RUN_COMMAND, *args]
        return super().parse_args(ctx, args)

    def _misspelled(self, word: str) -> str | None:
        """The command `word` is a slip for: a bare word (no folder, no suffix) that names no
        file and is close to a command's name; else None (it is a path for `run`)."""
        import difflib

        path = Path(word)
        if word.startswith("-") or path.exists() or path.name != word or path.suffix:
            return None
        close = difflib.get_close_matches(word, list(self.commands), n=1)
        return close[0] if close else None


@click.group(cls=DefaultToRun, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glmrun")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run conversations with Zhipu GLM models declared in YAML files.

    \b
    glmrun convos/greeting.yaml --mock     run a file against the built-in emulator
    glmrun convos/ -j 8 --junit junit.xml  run a folder of conversation files
    glmrun validate convos/                check files without calling anything
    glmrun init my-prompts                 start a suite: folders, schema, CI, pre-commit
    """
    if ctx.invoked_subcommand in NO_PROJECT_COMMANDS:
        return
    from glmrun.load.project import load_project

    try:
        project = load_project()
    except errors.GlmrunError as exc:
        fail(exc)
        return
    ctx.obj = project  # its .env, for the commands that need a key
    defaults = project.run_defaults()  # below the command line and the environment
    ctx.default_map = {RUN_COMMAND: defaults,
                       "merge": {k: v for k, v in defaults.items() if k == "out_dir"}}


@main.command("mock-server")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--latency", type=click.FloatRange(0), default=0.0, help="Seconds per request.")
@click.option("--chunk-delay", type=click.FloatRange(0), default=0.0,
              help="Seconds between SSE chunks.")
@click.option("--concurrency-limit", type=click.IntRange(1),
              help="Answer 429 / code 1302 beyond this many requests in flight.")
@click.option("--async-polls", type=click.IntRange(0), default=2, show_default=True,
              help="PROCESSING answers before an async task succeeds.")
def mock_server(port: int, latency: float, chunk_delay: float, concurrency_limit: int | None,
                async_polls: int) -> None:
    """Run the Zhipu API emulator on 127.0.0.1 (point --base-url at it)."""
    from glmrun.mock import MockConfig, serve

    serve(MockConfig(latency_s=latency, chunk_delay_s=chunk_delay,
                     concurrency_limit=concurrency_limit, async_polls=async_polls), port=port)



for command in (run_command, validate, schema, init_command, merge_command, diff, report, view,
                batch_group):
    main.add_command(command)
