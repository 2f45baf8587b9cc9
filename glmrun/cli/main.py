"""The command line: parse, call the core, turn errors into messages and exit codes.

Exit codes: 0 every conversation passed; 1 an expectation failed (or `diff` found a
regression); 2 bad usage or an invalid file; 3 a conversation could not be completed;
130 interrupted. Heavy modules (the SDK, rich, jsonschema) are imported inside commands so
`glmrun --help` stays fast.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from glmrun import __version__, errors

RUN_COMMAND = "run"
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


def _fail(exc: errors.GlmrunError, redactor: Any = None) -> None:
    """Print a glmrun error the way a user can act on it (no secret in it), and exit with its
    code."""
    redactor = redactor or _env_redactor()
    text = f"error: {exc}" if not isinstance(exc, errors.SpecError) else str(exc)
    click.echo(redactor.text(text), err=True)
    if isinstance(exc, errors.SpecError):
        n = len(exc.problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
    sys.exit(exc.exit_code)


def _shard(text: str | None) -> Any:
    if text is None:
        return None
    from glmrun.plan.shards import parse_shard

    try:
        return parse_shard(text)
    except errors.InputError as exc:
        raise click.BadParameter(str(exc).removeprefix("--shard "), param_hint="--shard") from None


def _env_redactor() -> Any:
    """The redactor of the keys in the environment and the project's .env (what a run adds:
    see api.run_redactor)."""
    from glmrun.safety.redaction import Redactor, env_keys

    with contextlib.suppress(RuntimeError):  # outside a command: no project
        return Redactor([*env_keys(), *env_keys(_dotenv())])
    return Redactor(env_keys())


def _parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"'{item}' is not of the form NAME=VALUE", param_hint="--var")
        out[key.strip()] = value
    return out


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
        _fail(exc)
        return
    ctx.obj = project  # its .env, for the commands that need a key
    defaults = project.run_defaults()  # below the command line and the environment
    ctx.default_map = {RUN_COMMAND: defaults,
                       "merge": {k: v for k, v in defaults.items() if k == "out_dir"}}


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


def _import_quietly(module: str) -> None:
    """Import the SDK ahead (it takes ~0.15 s); a missing one is reported when it is used."""
    with contextlib.suppress(ImportError):
        importlib.import_module(module)


def _dotenv() -> dict[str, str]:
    """The project's .env variables (the key), as found by `main`."""
    project = click.get_current_context().find_root().obj
    return dict(project.dotenv) if project is not None else {}


def _project_hosts() -> tuple[str, ...]:
    """The project file's allow_hosts, as found by `main`."""
    project = click.get_current_context().find_root().obj
    return project.allow_hosts if project is not None else ()


_SDK_OPTION = click.option(
    "--sdk", type=click.Choice(["zhipuai", "zai"]), default="zhipuai", show_default=True,
    envvar="GLMRUN_SDK", show_envvar=True,
    help="The SDK that calls the API (zai: pip install 'glmrun[zai]').")
_REGION_OPTION = click.option(
    "--region", type=click.Choice(["cn", "intl"]), default="cn", show_default=True,
    envvar="GLMRUN_REGION", show_envvar=True,
    help="cn: open.bigmodel.cn, key $ZHIPUAI_API_KEY; intl: api.z.ai, key $ZAI_API_KEY, base "
         "URL $ZAI_BASE_URL.")


@main.command(RUN_COMMAND)
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
@_SDK_OPTION
@_REGION_OPTION
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
        threading.Thread(target=_import_quietly, args=("zai" if sdk == "zai" else "zhipuai",),
                         daemon=True).start()
    from glmrun import api
    from glmrun.run.limits import RetryPolicy
    from glmrun.run.runner import PollPolicy, RunOptions

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
            paths=paths, cli_vars=_parse_vars(vars_), mode=mode,
            model=models[0] if len(models) == 1 else None,
            models=models if len(models) > 1 else (), name_filter=name_filter,
            limit=limit, repeat=repeat, only_ids=only_ids, shard=_shard(shard_text),
        )
        settings = api.BackendSettings(
            mock=mock and replay_dir is None, base_url=base_url, timeout_s=timeout_s,
            pool_size=concurrency, record_chunk_offsets=chunk_times,
            needs_key=replay_dir is None,  # a replay wins over --mock: no emulator
            dotenv=_dotenv(), allow_hosts=allow_hosts, project_hosts=_project_hosts(),
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
        if any(p.mode == "batch" for p in plans):  # glmrun.batch.collector is imported only then
            if no_wait and mock:
                raise errors.InputError("--no-wait leaves batches on the server, but the "
                                        "--mock emulator ends with this run: use --base-url "
                                        "instead")
            batch, left = _batch_options(selection, wait=not no_wait, quiet=quiet,
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
        summary = _run_with_signals(plans, settings, options, verbose - quiet, not no_progress,
                                    live, batch=batch, progress_every=progress_every,
                                    redactor=redactor)
    except errors.GlmrunError as exc:
        _fail(exc, redactor)
        return
    _say_left(left, out_dir)
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
        _write_report((out_dir,), html_path)
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


def _run_with_signals(plans: Any, settings: Any, options: Any, verbosity: int, progress: bool,
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


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--var", "vars_", multiple=True, metavar="NAME=VALUE",
              help="Set a template variable for the check (repeatable).")
def validate(paths: tuple[Path, ...], vars_: tuple[str, ...]) -> None:
    """Check files against the schema and render every template; call nothing."""
    from glmrun.load.spec import discover
    from glmrun.plan.plans import validate_paths

    try:
        files = discover(list(paths))
    except errors.InputError as exc:
        _fail(exc)
        return
    hints: list[str] = []
    problems = validate_paths(list(paths), _parse_vars(vars_), hints)
    for hint in hints:
        click.echo(f"warning: {hint}", err=True)
    if problems:
        _fail(errors.SpecError(problems))
    click.echo(f"ok: {len(files)} file{'s' if len(files) != 1 else ''} valid")


@main.command()
@click.option("--transcript", is_flag=True, help="Print the transcript schema instead.")
def schema(transcript: bool) -> None:
    """Print the JSON Schema of conversation files (for editors)."""
    from importlib.resources import files

    name = "transcript.schema.json" if transcript else "convo.schema.json"
    click.echo((files("glmrun") / "schemas" / name).read_text(encoding="utf-8"), nl=False)


@main.command("merge")
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
        _fail(exc)
        return
    except OSError as exc:
        _fail(errors.OutputError(f"cannot write {junit_path}: {exc.strerror or exc}"))
        return
    click.echo(render_summary(merged.summary))
    if merged.missing:
        click.echo(f"incomplete: no folder of shard {', '.join(merged.missing)}: its runs are "
                   "not in this run (exit 3)", err=True)
    click.echo(f"transcripts: {out_dir}/", err=True)
    sys.exit(merged.exit_code)


@main.command("init")
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
        _fail(exc)
        return
    for path in written:
        click.echo(f"created {path}")
    where = "" if folder == Path(".") else f"cd {folder} && "
    click.echo(f"next: {where}glmrun convos/ --mock", err=True)


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
    from glmrun.mock.server import MockConfig, serve

    serve(MockConfig(latency_s=latency, chunk_delay_s=chunk_delay,
                     concurrency_limit=concurrency_limit, async_polls=async_polls), port=port)


@main.command()
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
        _fail(exc)
        return
    click.echo(render_markdown(result) if fmt == "md" else render_text(result))
    reasons = verdict(result, allow_missing=allow_missing)
    for reason in reasons:
        click.echo(f"fail: {reason}", err=True)
    sys.exit(1 if reasons else 0)


@main.command()
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
    _write_report(folders, out_path or default)


def _write_report(folders: tuple[Path, ...], out_path: Path) -> None:
    from glmrun.report.html import write_report

    try:
        written = write_report(folders, out_path)
    except OSError as exc:
        _fail(errors.InputError(f"cannot write {out_path}: {exc.strerror or exc}"))
        return
    click.echo(f"report: {written['path']} ({written['bytes'] / 1024:,.0f} KB)", err=True)


@main.command()
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


# -- batch mode --------------------------------------------------------------------------


def _batch_options(selection: Any, *, wait: bool, poll_s: float, quiet: int,
                   report_failed: frozenset[str] = frozenset()) -> tuple[Any, list[Any]]:
    """Batch-mode settings that print batch events to stderr; also the list of batches left
    running (filled during the run)."""
    from glmrun.batch.collector import BatchOptions, BatchPollPolicy, describe

    left: list[Any] = []
    redactor = _env_redactor()

    def on_event(event: Any) -> None:
        if event.kind == "left":
            left.append(event)
        if quiet <= 0 or event.kind == "left":
            click.echo(redactor.text(describe(event)), err=True)

    return BatchOptions(selection=selection.saved(), poll=BatchPollPolicy(start_s=poll_s),
                        wait=wait, on_event=on_event, report_failed=report_failed), left


def _say_left(left: list[Any], out_dir: Path) -> None:
    if left:
        n = len({e.batch.id for e in left})
        click.echo(f"{n} batch{'es' if n != 1 else ''} still running on the server; collect "
                   f"with: glmrun batch fetch -o {out_dir}", err=True)


_OUT_OPTION = click.option(
    "-o", "--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
    default=Path("glmrun-out"), show_default=True, help="The folder of the batch run.")
_BASE_URL_OPTION = click.option(
    "--base-url", help="API base URL (default: the one the batch was submitted to).")


@main.group("batch")
def batch_group() -> None:
    """Batches submitted by `--mode batch`: show, collect, cancel.

    \b
    glmrun convos/ --mode batch --no-wait -o out   submit and exit
    glmrun batch status -o out                     every batch of the run
    glmrun batch fetch -o out                      collect ended batches, finish the run
    """


@batch_group.command("status")
@click.argument("ids", nargs=-1)
@_OUT_OPTION
@_BASE_URL_OPTION
@_SDK_OPTION
@_REGION_OPTION
def batch_status(ids: tuple[str, ...], out_dir: Path, base_url: str | None, sdk: str,
                 region: str) -> None:
    """Show batches' status and request counts (default: every batch recorded in --out)."""
    from glmrun import api
    from glmrun.batch import collector as batch

    try:
        with api.open_batch_api(api.BackendSettings(
                base_url=base_url, dotenv=_dotenv(), sdk=sdk, region=region)) as api_for:
            views = batch.statuses(out_dir, ids, api_for)
    except errors.GlmrunError as exc:
        _fail(exc)
        return
    redactor = _env_redactor()
    for view in views:
        click.echo(redactor.text(batch.view_line(view)))


@batch_group.command("cancel")
@click.argument("ids", nargs=-1)
@_OUT_OPTION
@_BASE_URL_OPTION
@_SDK_OPTION
@_REGION_OPTION
def batch_cancel(ids: tuple[str, ...], out_dir: Path, base_url: str | None, sdk: str,
                 region: str) -> None:
    """Cancel batches (default: every batch of --out still running)."""
    from glmrun import api
    from glmrun.batch import collector as batch

    try:
        with api.open_batch_api(api.BackendSettings(
                base_url=base_url, dotenv=_dotenv(), sdk=sdk, region=region)) as api_for:
            infos = batch.cancel(out_dir, ids, api_for)
    except errors.GlmrunError as exc:
        _fail(exc)
        return
    for info in infos:
        click.echo(f"batch {info.id}: {info.status}")


@batch_group.command("fetch")
@click.argument("ids", nargs=-1)
@_OUT_OPTION
@_BASE_URL_OPTION
@_SDK_OPTION
@_REGION_OPTION
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
    from glmrun.batch import collector as batch
    from glmrun.run.runner import RunOptions

    try:
        saved = api.saved_batch_run(out_dir)
        url = base_url or (saved.base_url if saved else None)
        settings = api.BackendSettings(base_url=url, dotenv=_dotenv(), sdk=sdk, region=region)
        with api.open_batch_api(settings) as api_for:
            result = batch.fetch(out_dir, ids, api_for)
        for info in result.running:
            click.echo(f"batch {info.id} is still {info.status} ({batch.counts_text(info)}): "
                       "nothing collected yet, try again later")
        if result.running:
            return
        for info in result.collected:
            click.echo(f"batch {info.id}: {info.status}, collected", err=True)
        if saved is None:
            click.echo(f"results stored in {batch.state_dir(out_dir)}; no saved run to resume",
                       err=True)
            return
        plans = [p for p in api.load_plans(saved.selection) if p.mode == "batch"]
        shard = saved.selection.shard  # the run's shard, as `glmrun run --shard` recorded it
        options = RunOptions(out_dir=out_dir, formats=saved.formats, resume=True,
                             run_settings={"shard": str(shard) if shard else None})
        opts, left = _batch_options(saved.selection, wait=not no_wait, poll_s=batch_poll,
                                    quiet=quiet, report_failed=result.failed_ids)
        summary = _run_with_signals(plans, settings, options, verbose - quiet, not no_progress,
                                    None, batch=opts)
    except errors.GlmrunError as exc:
        _fail(exc)
        return
    _say_left(left, out_dir)
    click.echo(f"transcripts: {out_dir}/", err=True)
    sys.exit(summary.exit_code)
