"""`glmrun batch status / fetch / cancel`: the batches a `--mode batch` run left on the
server (state kept in its --out folder by glmrun.batch)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from glmrun import errors
from glmrun.cli.common import (
    REGION_OPTION,
    SDK_OPTION,
    env_redactor,
    fail,
    project_dotenv,
)
from glmrun.cli.run import batch_options, run_with_signals, say_left

if TYPE_CHECKING:
    from glmrun.api import BackendSettings

_OUT_OPTION = click.option(
    "-o", "--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
    default=Path("glmrun-out"), show_default=True, help="The folder of the batch run.")
_BASE_URL_OPTION = click.option(
    "--base-url", help="API base URL (default: the one the batch was submitted to).")


@click.group("batch")
def batch_group() -> None:
    """Batches submitted by `--mode batch`: show, collect, cancel.

    \b
    glmrun convos/ --mode batch --no-wait -o out   submit and exit
    glmrun batch status -o out                     every batch of the run
    glmrun batch fetch -o out                      collect ended batches, finish the run
    """


def _settings(base_url: str | None, sdk: str, region: str) -> BackendSettings:
    """How a batch command reaches the Batch API (`api.BackendSettings`)."""
    from glmrun import api

    return api.BackendSettings(base_url=base_url, dotenv=project_dotenv(), sdk=sdk,
                               region=region)


@batch_group.command("status")
@click.argument("ids", nargs=-1)
@_OUT_OPTION
@_BASE_URL_OPTION
@SDK_OPTION
@REGION_OPTION
def batch_status(ids: tuple[str, ...], out_dir: Path, base_url: str | None, sdk: str,
                 region: str) -> None:
    """Show batches' status and request counts (default: every batch recorded in --out)."""
    from glmrun import api
    from glmrun.batch import commands as batch

    try:
        with api.open_batch_api(_settings(base_url, sdk, region)) as api_for:
            views = batch.statuses(out_dir, ids, api_for)
    except errors.GlmrunError as exc:
        fail(exc)
        return
    redactor = env_redactor()
    for view in views:
        click.echo(redactor.text(batch.view_line(view)))


@batch_group.command("cancel")
@click.argument("ids", nargs=-1)
@_OUT_OPTION
@_BASE_URL_OPTION
@SDK_OPTION
@REGION_OPTION
def batch_cancel(ids: tuple[str, ...], out_dir: Path, base_url: str | None, sdk: str,
                 region: str) -> None:
    """Cancel batches (default: every batch of --out still running)."""
    from glmrun import api
    from glmrun.batch import commands as batch

    try:
        with api.open_batch_api(_settings(base_url, sdk, region)) as api_for:
            infos = batch.cancel(out_dir, ids, api_for)
    except errors.GlmrunError as exc:
        fail(exc)
        return
    for info in infos:
        click.echo(f"batch {info.id}: {info.status}")


@batch_group.command("fetch")
@click.argument("ids", nargs=-1)
@_OUT_OPTION
@_BASE_URL_OPTION
@SDK_OPTION
@REGION_OPTION
@click.option("--no-wait", is_flag=True,
              help="Submit the batches of any further turns and exit instead of waiting.")
@click.option("--batch-poll", type=click.FloatRange(0.01), default=5.0, show_default=True,
              help="First wait between status checks of further batches, seconds.")
@click.option("--no-progress", is_flag=True, help="No progress bar or progress lines.")
@click.option("-q", "--quiet", count=True, help="Print only failures and the summary.")
@click.option("-v", "--verbose", count=True, help="Print every conversation in full.")
def batch_fetch(ids: tuple[str, ...], out_dir: Path, base_url: str | None, sdk: str,
                region: str, no_wait: bool, batch_poll: float, no_progress: bool, quiet: int,
                verbose: int) -> None:
    """Collect ended batches into --out and finish their conversations.

    Downloads the results of the named batches (default: every batch of --out not collected
    yet), then resumes the run that submitted them: known requests are answered from those
    results, and conversations with further turns submit new batches. If a batch is still
    running, says so and exits 0 without changing anything.
    """
    from glmrun import api
    from glmrun.batch import commands as batch
    from glmrun.batch.options import counts_text
    from glmrun.batch.state import state_dir
    from glmrun.run.options import RunOptions

    try:
        saved = api.saved_batch_run(out_dir)
        url = base_url or (saved.base_url if saved else None)
        settings = _settings(url, sdk, region)
        with api.open_batch_api(settings) as api_for:
            result = batch.fetch(out_dir, ids, api_for)
        for info in result.running:
            click.echo(f"batch {info.id} is still {info.status} ({counts_text(info)}): "
                       "nothing collected yet, try again later")
        if result.running:
            return
        for info in result.collected:
            click.echo(f"batch {info.id}: {info.status}, collected", err=True)
        if saved is None:
            click.echo(f"results stored in {state_dir(out_dir)}; no saved run to resume",
                       err=True)
            return
        plans = [p for p in api.load_plans(saved.selection) if p.mode == "batch"]
        shard = saved.selection.shard  # the run's shard, as `glmrun run --shard` recorded it
        options = RunOptions(out_dir=out_dir, formats=saved.formats, resume=True,
                             run_settings={"shard": str(shard) if shard else None})
        opts, left = batch_options(saved.selection, wait=not no_wait, poll_s=batch_poll,
                                    quiet=quiet, report_failed=result.failed_ids)
        summary = run_with_signals(plans, settings, options, verbose - quiet, not no_progress,
                                    None, batch=opts)
    except errors.GlmrunError as exc:
        fail(exc)
        return
    say_left(left, out_dir)
    click.echo(f"transcripts: {out_dir}/", err=True)
    sys.exit(summary.exit_code)
