"""`glmrun run` (also `glmrun PATH...`): options → a Selection, BackendSettings and RunOptions
for `glmrun.api`, signals that stop a run gracefully, and what follows a run (matrix, summary
files, baseline, JUnit, HTML)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from glmrun import errors
from glmrun.cli.common import (
    REGION_OPTION,
    SDK_OPTION,
    OutFolder,
    env_redactor,
    fail,
    import_quietly,
    parse_vars,
    project_dotenv,
    project_hosts,
)
from glmrun.cli.results import write_report_file

RUN_COMMAND = "run"


def _shard(text: str | None) -> Any:
    if text is None:
        return None
    from glmrun.plan.shards import parse_shard

    try:
        return parse_shard(text)
    except errors.InputError as exc:
        raise click.BadParameter(str(exc).removeprefix("--shard "), param_hint="--shard") from None



@click.command(RUN_COMMAND)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir",
              type=OutFolder("For the HTML report use --html FILE, for JUnit --junit FILE."),
              default=Path("glmrun-out"), show_default=True, envvar="GLMRUN_OUT", show_envvar=True,
              help="Folder for transcripts.")
@click.option("--format", "formats", multiple=True, type=click.Choice(["json", "md"]),
              envvar="GLMRUN_FORMATS", show_envvar=True,
              help="Transcript formats (repeatable). Default: json and md.")
@click.option("--mode", type=click.Choice(["sync", "stream", "async", "batch"]),
              help="Override every file's call mode.")
@click.option("--model", "models", multiple=True, envvar="GLMRUN_MODEL", show_envvar=True,
              help="Override every file's model; repeated, run every conversation on each "
                   "model (a matrix: run ids carry the model).")
@click.option("--var", "vars_", multiple=True, metavar="NAME=VALUE",
              help="Set a template variable (wins over the files; repeatable).")
@click.option("-j", "--concurrency", type=click.IntRange(1, 1024), default=4, show_default=True,
              envvar="GLMRUN_CONCURRENCY", show_envvar=True,
              help="Requests in flight at most; lowered automatically on rate limits.")
@click.option("--filter", "name_filter", metavar="GLOB",
              help="Run only conversations whose name or id matches (glob or substring).")
@click.option("--shard", "shard_text", metavar="K/N",
              help="Run only shard K of N (a stable split by run id, for a CI matrix); join "
                   "the jobs' folders with `glmrun merge`.")
@click.option("--dry-run", is_flag=True, help="Render and print the requests; call nothing.")
@click.option("--estimate", is_flag=True,
              help="Count each run's prompt tokens with Zhipu's tokenizer and price them; "
                   "no chat request is sent.")
@click.option("--mock", is_flag=True, help="Run against the built-in emulator (no key needed).")
@click.option("--base-url", help="API base URL (default: the file's, $ZHIPUAI_BASE_URL, Zhipu).")
@SDK_OPTION
@REGION_OPTION
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="HOST",
              help="A host files' base_url may send the API key to, besides Zhipu's and "
                   "loopback (repeatable; also $GLMRUN_ALLOW_HOSTS; both replace the project "
                   "file's allow_hosts).")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a JUnit XML report here.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the run's HTML report here (as `glmrun report`).")
@click.option("--resume", is_flag=True,
              help="Skip conversations whose transcript in --out passed or failed.")
@click.option("--last-failed", is_flag=True,
              help="Run again only the runs that failed, errored or did not run in --out "
                   "(from its run.json).")
@click.option("--repeat", type=click.IntRange(1, 1000),
              help="Run every conversation (and case) N times, overriding the files' repeat.")
@click.option("--limit", type=click.IntRange(1),
              help="Run only the first N runs (after --filter).")
@click.option("--baseline", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Compare with this earlier run's folder at the end (as `glmrun diff`); "
                   "exit 1 on a regression or a missing run.")
@click.option("--allow-missing", is_flag=True,
              help="With --baseline: runs of the baseline this run lacks do not fail it.")
@click.option("--summary-json", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the run's summary (totals, by conversation, by model, what did "
                   "not pass) as JSON here.")
@click.option("--summary-csv", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write one CSV row per run here.")
@click.option("--retries", type=click.IntRange(0, 100), default=4, show_default=True,
              help="Retries for rate limits, timeouts, 5xx and network errors.")
@click.option("--retry-wait", type=click.FloatRange(0), default=0.5, show_default=True,
              help="First wait before a retry, seconds; doubles each time (with jitter).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), default=300.0,
              show_default=True, help="Per-request timeout, seconds.")
@click.option("--deadline", "deadline_s", type=click.FloatRange(0.1),
              help="Per-conversation deadline, seconds (retries included).")
@click.option("--rpm", type=click.IntRange(1), help="Cap requests per minute.")
@click.option("--tpm", type=click.IntRange(1), help="Cap tokens per minute.")
@click.option("--poll-interval", type=click.FloatRange(0.01),
              help="Async mode: first wait between polls, seconds. Default: 1, or 0.02 with "
                   "--mock.")
@click.option("--poll-factor", type=click.FloatRange(1.0), default=1.5, show_default=True,
              help="Async mode: growth of the wait between polls.")
@click.option("--poll-max", type=click.FloatRange(0.01),
              help="Async mode: longest wait between polls, seconds. Default: 10, or 0.5 with "
                   "--mock.")
@click.option("--poll-timeout", type=click.FloatRange(0.1), default=600.0, show_default=True,
              help="Async mode: give a task up after this many seconds.")
@click.option("--record", "record_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Save every request and reply in this folder (for --replay / --cache).")
@click.option("--replay", "replay_dir",
              type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Answer from a --record folder: no network, no key; a miss is an error.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path, file_okay=False),
              envvar="GLMRUN_CACHE", show_envvar=True,
              help="Answer from this folder when recorded, else call the API and record.")
@click.option("--no-wait", is_flag=True,
              help="Batch mode: submit the batches, save them in --out and exit; collect "
                   "them later with `glmrun batch fetch -o DIR`.")
@click.option("--batch-poll", type=click.FloatRange(0.01),
              help="Batch mode: first wait between status checks, seconds (grows to 60). "
                   "Default: 5, or 0.05 with --mock.")
@click.option("--prices", "prices_path", envvar="GLMRUN_PRICES",
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Prices per model (YAML/JSON: {model: {input, output, cached}}, CNY per "
                   "million tokens), over glmrun's table. Also $GLMRUN_PRICES.")
@click.option("--chunk-times", is_flag=True,
              help="Stream mode: record each chunk's arrival offset in the transcript.")
@click.option("--live/--no-live", default=None,
              help="Print streamed tokens as they arrive (default: on a terminal, one convo).")
@click.option("--no-progress", is_flag=True, help="No progress bar or progress lines.")
@click.option("--progress-every", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Without a terminal (CI): seconds between plain progress lines.")
@click.option("-q", "--quiet", count=True, help="Print only failures and the summary.")
@click.option("-v", "--verbose", count=True, help="Print every conversation in full.")
def run_command(paths: tuple[Path, ...], out_dir: Path, formats: tuple[str, ...],
                mode: str | None, models: tuple[str, ...], vars_: tuple[str, ...],
                concurrency: int,
                name_filter: str | None, shard_text: str | None, dry_run: bool, estimate: bool,
                mock: bool,
                base_url: str | None, sdk: str, region: str, allow_hosts: tuple[str, ...],
                junit_path: Path | None, resume: bool, retries: int, retry_wait: float,
                timeout_s: float,
                deadline_s: float | None, rpm: int | None, tpm: int | None,
                poll_interval: float | None, poll_factor: float, poll_max: float | None,
                poll_timeout: float,
                record_dir: Path | None, replay_dir: Path | None, cache_dir: Path | None,
                chunk_times: bool, live: bool | None, no_progress: bool,
                progress_every: float, quiet: int,
                verbose: int, no_wait: bool = False, batch_poll: float | None = None,
                prices_path: Path | None = None,
                html_path: Path | None = None,
                last_failed: bool = False, repeat: int | None = None, limit: int | None = None,
                baseline: Path | None = None, allow_missing: bool = False,
                summary_json: Path | None = None, summary_csv: Path | None = None) -> None:
    """Run conversation files (or folders of them) and write transcripts."""
    if not dry_run:  # the SDK takes ~0.15 s to import: let it overlap loading and planning
        threading.Thread(target=import_quietly, args=("zai" if sdk == "zai" else "zhipuai",),
                         daemon=True).start()
    from glmrun import api
    from glmrun.run.limits import PollPolicy, RetryPolicy
    from glmrun.run.options import RunOptions

    models = tuple(dict.fromkeys(models))
    batch: Any = None
    left: list[Any] = []
    earlier = None
    redactor = None
    try:
        only_ids = None
        if last_failed:
            only_ids, earlier = api.last_failed(out_dir)
            if not only_ids:
                click.echo(f"nothing to run: every run in {out_dir} passed")
                return
        if baseline is not None:
            from glmrun.output.manifest import read_runs

            if not read_runs(baseline)[0]:
                raise errors.NotARunError(f"--baseline {baseline} holds no run (no run.json "
                                          "and no transcripts)")
        selection = api.Selection(
            paths=paths, cli_vars=parse_vars(vars_), mode=mode,
            model=models[0] if len(models) == 1 else None,
            models=models if len(models) > 1 else (), name_filter=name_filter,
            limit=limit, repeat=repeat, only_ids=only_ids, shard=_shard(shard_text),
        )
        settings = api.BackendSettings(
            mock=mock and replay_dir is None, base_url=base_url, timeout_s=timeout_s,
            pool_size=concurrency, record_chunk_offsets=chunk_times,
            needs_key=replay_dir is None,  # a replay wins over --mock: no emulator
            dotenv=project_dotenv(), allow_hosts=allow_hosts, project_hosts=project_hosts(),
            sdk=sdk, region=region,
        )
        redactor = api.run_redactor(settings)
        if record_dir or replay_dir or cache_dir:
            from glmrun.backends.recording import store_wrap

            settings.wrap = store_wrap(record=record_dir, replay=replay_dir, cache=cache_dir,
                                       redactor=redactor)
        hints: list[str] = []
        plans = api.load_plans(selection, hints)
        for hint in hints:
            click.echo(f"warning: {hint}", err=True)
        if not plans and selection.shard is not None:
            click.echo(f"shard {selection.shard}: no conversation falls in this shard", err=True)
        elif not plans:
            raise errors.InputError("no conversation matched" + (
                f" --filter '{name_filter}'" if name_filter else "") + (
                " the failures of --last-failed" if only_ids else ""))
        redactor = api.run_redactor(settings, plans)
        if any(p.mode == "batch" for p in plans):  # glmrun.batch is imported only then
            if no_wait and mock:
                raise errors.InputError("--no-wait leaves batches on the server, but the "
                                        "--mock emulator ends with this run: use --base-url "
                                        "instead")
            batch, left = batch_options(selection, wait=not no_wait, quiet=quiet,
                                         poll_s=batch_poll or (0.05 if mock else 5.0))
        if dry_run:
            for line in api.dry_run(plans, settings):
                click.echo(line)
            return
        if estimate:
            from glmrun.output.estimate import render_estimate

            counted = api.estimate(plans, settings, api.price_table(prices_path), concurrency)
            for line in render_estimate(counted):
                click.echo(redactor.text(line))
            return
        api.check_before_run(plans, settings, {"--record": record_dir, "--cache": cache_dir},
                                 {"--junit": junit_path, "--html": html_path})
        options = RunOptions(
            out_dir=out_dir, formats=formats or ("json", "md"), concurrency=concurrency,
            retry=RetryPolicy(retries=retries, base_s=retry_wait),
            poll=PollPolicy(  # the emulator answers at once: nothing to wait for
                start_s=poll_interval or (0.02 if mock else 1.0), factor=poll_factor,
                ceiling_s=poll_max or (0.5 if mock else 10.0), timeout_s=poll_timeout),
            rpm=rpm, tpm=tpm, deadline_s=deadline_s, resume=resume,
            prices=api.price_table(prices_path),
            command=("glmrun", *sys.argv[1:]), earlier_manifest=earlier,
            run_settings={"mode": mode, "filter": name_filter, "resume": resume,
                          "last_failed": last_failed, "repeat": repeat, "limit": limit,
                          # 'K/N': what `glmrun merge` reads to tell a shard is missing
                          "shard": str(selection.shard) if selection.shard else None},
        )
        summary = run_with_signals(plans, settings, options, verbose - quiet, not no_progress,
                                    live, batch=batch, progress_every=progress_every,
                                    redactor=redactor)
    except errors.GlmrunError as exc:
        fail(exc, redactor)
        return
    say_left(left, out_dir)
    code = _after_run(out_dir, summary.exit_code, baseline=baseline,
                      allow_missing=allow_missing, summary_json=summary_json,
                      summary_csv=summary_csv)
    if junit_path is not None:
        from glmrun.output.junit import write_junit
        from glmrun.output.transcript import read_transcript

        files = (out_dir / f"{run_id}.json" for run_id in summary.finished_ids())
        rows = (read_transcript(f) for f in files if f.exists())  # not all runs get one
        try:
            write_junit(rows, junit_path)
        except OSError as exc:  # disk full, folder gone: the transcripts are still there
            click.echo(redactor.text(
                f"error: cannot write the JUnit report {junit_path}: {exc.strerror or exc}; "
                f"the transcripts are in {out_dir}/"), err=True)
            sys.exit(3)
    if html_path is not None:
        write_report_file((out_dir,), html_path)
    if summary.interrupted:
        again = " ".join(sys.argv[1:]) if "--resume" in sys.argv else (
            " ".join([*sys.argv[1:], "--resume"]))
        click.echo(redactor.text(
            f"interrupted: transcripts of finished conversations are in {out_dir}/; "
            f"resume with: glmrun {again}"), err=True)
    click.echo(f"transcripts: {out_dir}/", err=True)
    sys.exit(code)


def _after_run(out_dir: Path, code: int, *, baseline: Path | None, allow_missing: bool,
               summary_json: Path | None, summary_csv: Path | None) -> int:
    """The model matrix, the summary files and the baseline comparison; the exit code."""
    from glmrun.output import manifest, matrix

    data = manifest.read(out_dir)
    if data is None:
        return code
    if matrix.is_matrix(data):
        click.echo(matrix.render_text(data))
    try:
        if summary_json is not None:
            from glmrun.safety.atomic import write_json_atomically

            write_json_atomically(summary_json, manifest.summary_of(data, code))
        if summary_csv is not None:
            manifest.write_csv(data, summary_csv)
    except OSError as exc:
        click.echo(f"error: cannot write the summary: {exc}", err=True)
        code = max(code, 2) if code != 130 else code
    if baseline is not None:
        from glmrun.output.diff import diff_runs, render_text, verdict

        result = diff_runs(baseline, out_dir)
        click.echo(render_text(result))
        reasons = verdict(result, allow_missing=allow_missing)
        for reason in reasons:
            click.echo(f"fail: against --baseline {baseline}: {reason}", err=True)
        if reasons and code == 0:
            code = 1
    return code


def run_with_signals(plans: Any, settings: Any, options: Any, verbosity: int, progress: bool,
                      live: bool | None, *, batch: Any = None,
                      progress_every: float = 10.0, redactor: Any = None) -> Any:
    """Run with Ctrl-C / SIGTERM stopping new work gracefully instead of killing the process."""
    from glmrun import api
    from glmrun.output.progress import ConsoleReporter

    reporter = ConsoleReporter(
        out=sys.stdout, err=sys.stderr, verbosity=verbosity, progress=progress,
        tty=sys.stderr.isatty() and sys.stdout.isatty(), live=live, interval_s=progress_every,
        secrets=redactor or api.run_redactor(settings, plans),
    )
    holder: dict[str, Any] = {}
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        runner = holder.get("runner")
        if runner is None:
            return
        if runner.interrupt():  # the second one abandons the calls in flight
            click.echo("\nstopping: no new conversations; waiting for calls in flight "
                       "(press Ctrl-C again to abandon them)", err=True)
        else:
            click.echo("abandoning the calls in flight (--resume sends them again)", err=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread, e.g. in some test runners
            previous[sig] = signal.signal(sig, on_signal)
    try:
        return api.run_plans(plans, settings, options, reporter,
                                 on_runner=lambda r: holder.__setitem__("runner", r),
                                 batch=batch)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)



def batch_options(selection: Any, *, wait: bool, poll_s: float, quiet: int,
                   report_failed: frozenset[str] = frozenset()) -> tuple[Any, list[Any]]:
    """Batch-mode settings that print batch events to stderr; also the list of batches left
    running (filled during the run)."""
    from dataclasses import replace

    from glmrun.batch.options import BATCH_POLL, BatchOptions, describe

    left: list[Any] = []
    redactor = env_redactor()

    def on_event(event: Any) -> None:
        if event.kind == "left":
            left.append(event)
        if quiet <= 0 or event.kind == "left":
            click.echo(redactor.text(describe(event)), err=True)

    return BatchOptions(selection=selection.saved(), poll=replace(BATCH_POLL, start_s=poll_s),
                        wait=wait, on_event=on_event, report_failed=report_failed), left


def say_left(left: list[Any], out_dir: Path) -> None:
    if left:
        n = len({e.batch.id for e in left})
        click.echo(f"{n} batch{'es' if n != 1 else ''} still running on the server; collect "
                   f"with: glmrun batch fetch -o {out_dir}", err=True)
