"""Commands on finished runs' folders: `glmrun merge` (shards into one run), `glmrun diff`,
`glmrun report` (one HTML file) and `glmrun view` (served on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from glmrun import errors
from glmrun.cli.common import OutFolder, fail


@click.command("merge")
@click.argument("folders", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir",
              type=OutFolder("For JUnit use --junit FILE; for the HTML report, then: "
                             "glmrun report OUT -o FILE."),
              default=Path("glmrun-out"), show_default=True, envvar="GLMRUN_OUT",
              show_envvar=True, help="Folder for the joined run.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a JUnit XML report of the joined run here.")
def merge_command(folders: tuple[Path, ...], out_dir: Path, junit_path: Path | None) -> None:
    """Join the output folders of `--shard K/N` jobs into one run, as if it ran whole.

    Copies the transcripts, writes one run.json, prints the whole run's summary and exits as
    the whole run would have (0 passed, 1 failed, 3 errors or runs that never ran).
    """
    from glmrun.output.merge import merge
    from glmrun.output.progress import render_summary

    try:
        merged = merge(list(folders), out_dir)
        if junit_path is not None:
            from glmrun.output.junit import write_junit
            from glmrun.output.transcript import read_transcript

            write_junit((read_transcript(p) for p in merged.transcripts), junit_path)
    except errors.GlmrunError as exc:
        fail(exc)
        return
    except OSError as exc:
        fail(errors.OutputError(f"cannot write {junit_path}: {exc.strerror or exc}"))
        return
    click.echo(render_summary(merged.summary))
    if merged.missing:
        click.echo(f"incomplete: no folder of shard {', '.join(merged.missing)}: its runs are "
                   "not in this run (exit 3)", err=True)
    click.echo(f"transcripts: {out_dir}/", err=True)
    sys.exit(merged.exit_code)



@click.command()
@click.argument("old", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("new", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "md"]), default="text",
              show_default=True)
@click.option("--allow-missing", is_flag=True,
              help="Runs of OLD missing from NEW are reported but do not fail.")
def diff(old: Path, new: Path, fmt: str, allow_missing: bool) -> None:
    """Compare two runs (their run.json, else transcripts); exit 1 on a regression, on runs
    missing from NEW, or when nothing could be compared."""
    from glmrun.output.diff import diff_runs, render_markdown, render_text, verdict

    try:
        result = diff_runs(old, new)
    except errors.GlmrunError as exc:
        fail(exc)
        return
    click.echo(render_markdown(result) if fmt == "md" else render_text(result))
    reasons = verdict(result, allow_missing=allow_missing)
    for reason in reasons:
        click.echo(f"fail: {reason}", err=True)
    sys.exit(1 if reasons else 0)


@click.command()
@click.argument("folders", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("-o", "--out", "out_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The HTML file. Default: report.html in OUT, or diff.html in NEW.")
def report(folders: tuple[Path, ...], out_path: Path | None) -> None:
    """Write one self-contained HTML report of a run folder: `glmrun report OUT`.

    With two folders, `glmrun report OLD NEW` writes the diff report of the two runs
    (status changes first, replies side by side), to attach to a pull request.
    """
    if len(folders) > 2:
        raise click.UsageError("give one run folder (a report) or two (OLD NEW: a diff report)")
    default = folders[0] / "report.html" if len(folders) == 1 else folders[1] / "diff.html"
    write_report_file(folders, out_path or default)


def write_report_file(folders: tuple[Path, ...], out_path: Path) -> None:
    from glmrun.report.html import write_report

    try:
        written = write_report(folders, out_path)
    except OSError as exc:
        fail(errors.InputError(f"cannot write {out_path}: {exc.strerror or exc}"))
        return
    click.echo(f"report: {written['path']} ({written['bytes'] / 1024:,.0f} KB)", err=True)


@click.command()
@click.argument("folders", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Port on 127.0.0.1. Default: a free one.")
@click.option("--no-browser", is_flag=True, help="Only serve; do not open a browser.")
def view(folders: tuple[Path, ...], port: int, no_browser: bool) -> None:
    """Serve the report of a run folder (or the diff of two) on 127.0.0.1 and open it.

    The page is rebuilt from the folder on every reload. Ctrl-C stops the server.
    """
    if len(folders) > 2:
        raise click.UsageError("give one run folder (a report) or two (OLD NEW: a diff report)")
    from glmrun.report.serve import ReportServer

    with ReportServer(folders, port=port) as server:
        click.echo(f"serving the report on {server.url} (Ctrl-C to stop)", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            if not no_browser:
                import webbrowser

                webbrowser.open(server.url)
            server.wait()
