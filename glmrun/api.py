"""The library entry point: files in, transcripts out. The CLI is a thin layer over this."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glmrun import errors
from glmrun.types import ENDPOINTS

if TYPE_CHECKING:
    from glmrun.backends.base import Backend
    from glmrun.backends.batch_api import BatchApi
    from glmrun.batch.options import BatchOptions
    from glmrun.models import PriceTable
    from glmrun.output.estimate import EstimateRow
    from glmrun.output.summary import RunSummary
    from glmrun.plan.plans import RunPlan
    from glmrun.plan.shards import Shard
    from glmrun.run.options import Reporter, RunOptions
    from glmrun.safety.redaction import Redactor

MOCK_KEY = "mock-key"


@dataclass(frozen=True)
class Selection:
    """Which conversations to run and how the command line overrides the files."""

    paths: tuple[Path, ...]
    cli_vars: Mapping[str, str] = field(default_factory=dict)
    mode: str | None = None
    model: str | None = None  # one --model: overrides the files' model, ids unchanged
    models: tuple[str, ...] = ()  # two or more --model: every conversation on each
    name_filter: str | None = None
    limit: int | None = None  # only the first N runs
    repeat: int | None = None  # overrides every conversation's `repeat`
    only_ids: frozenset[str] | None = None  # only these runs (--last-failed)
    shard: Shard | None = None  # --shard K/N: this job's slice of the runs (after --limit)


    def saved(self) -> dict[str, Any]:
        """The selection as state.json keeps it (`saved_batch_run` reads it back)."""
        return {
            "paths": [str(Path(p).resolve()) for p in self.paths],
            "vars": dict(self.cli_vars),
            "mode": self.mode,
            "model": self.model,
            "models": list(self.models),
            "filter": self.name_filter,
            "limit": self.limit,
            "repeat": self.repeat,
            "only_ids": sorted(self.only_ids) if self.only_ids is not None else None,
            "shard": str(self.shard) if self.shard else None,
        }


def load_plans(selection: Selection, hints: list[str] | None = None) -> list[RunPlan]:
    """Discover, load and plan every conversation; SpecError lists every problem at once.

    `hints` receives the warnings (glmrun.plan.hints: a model name close to a known one)."""
    from glmrun.load.spec import discover, suite_roots
    from glmrun.plan.checking import plan_files
    from glmrun.plan.shards import select

    files = discover(list(selection.paths))
    roots = suite_roots(selection.paths)  # a run's id is its file's path below the folder given
    if not files:
        where = ", ".join(str(p) for p in selection.paths)
        raise errors.InputError(f"no conversation files (*.yaml, *.yml) in {where}")
    overrides = (selection.model,) if selection.model else selection.models
    return select(plan_files(
        files, hints=hints, hint_overrides=overrides,
        cli_vars=selection.cli_vars, mode_override=selection.mode,
        model_override=selection.model, models=selection.models,
        name_filter=selection.name_filter, roots=roots, limit=selection.limit,
        repeat=selection.repeat, only_ids=selection.only_ids,
    ), selection.shard)


def dry_run(plans: Sequence[RunPlan], settings: BackendSettings) -> Iterator[str]:
    """The exact first request of each conversation, as JSON lines; nothing is called.

    A file's base URL the key may not go to is an InputError here too; secrets are redacted.
    """
    from glmrun.safety.baseurl import display

    check_base_urls(plans, settings)
    redactor = run_redactor(settings, plans)
    for plan in plans:
        yield json.dumps(redactor.value({
            "id": plan.id,
            "endpoint": ENDPOINTS[plan.mode],
            "base_url": display(settings.base_url or plan.spec.base_url
                                or _default_base_url(settings.region)),
            "body": plan.request(plan.rendered.messages).body(),
            "turns": [t.content for t in plan.rendered.turns],
        }), ensure_ascii=False)


def estimate(plans: Sequence[RunPlan], settings: BackendSettings, prices: PriceTable,
             concurrency: int = 4) -> list[EstimateRow]:
    """Each run's first request counted by Zhipu's tokenizer endpoint, priced at the model's
    input price (the Batch API at its discount); no chat request is sent."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from glmrun.backends.sdk import TokenCounter
    from glmrun.output.estimate import EstimateRow
    from glmrun.types import Usage

    check_base_urls(plans, settings)
    with open_backend(dataclasses.replace(settings, wrap=None)) as (factory, _url, _secrets):
        counters: dict[str | None, TokenCounter] = {}

        def counter(url: str | None) -> TokenCounter:
            if url not in counters:
                backend = factory(url)
                if not isinstance(backend, TokenCounter):
                    raise errors.InputError("--estimate needs the API or the emulator")
                counters[url] = backend
            return counters[url]

        def count(plan: RunPlan) -> EstimateRow:
            request = dataclasses.replace(plan.request(plan.rendered.messages), mode="sync")
            tokens = counter(plan.spec.base_url).count_tokens(request)
            price = prices.price(plan.model)
            cost = None if price is None else price.cost(
                Usage(prompt_tokens=tokens, total_tokens=tokens), batch=plan.mode == "batch")
            return EstimateRow(plan.id, plan.model, tokens, cost)

        for url in {p.spec.base_url for p in plans}:
            counter(url)  # built on this thread: the factory is not shared between threads
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(plans)))) as pool:
                return list(pool.map(count, plans))
        finally:
            from glmrun.backends.base import Backend as Closable

            for backend in counters.values():
                if isinstance(backend, Closable):
                    backend.close()


def check_base_urls(plans: Sequence[RunPlan], settings: BackendSettings) -> None:
    """InputError, before anything is sent, when a file's base URL is one the key may not go to
    (see glmrun.safety.baseurl). Files' base URLs are not used with --base-url or --mock."""
    from glmrun.safety.baseurl import KeyHosts

    if settings.base_url or settings.mock:
        return
    hosts = KeyHosts.from_environment(settings.allow_hosts, project=settings.project_hosts)
    seen: set[str] = set()
    for plan in plans:
        url = plan.spec.base_url
        if url and url not in seen:
            seen.add(url)
            hosts.check(url, plan.spec.at.file if plan.spec.at else str(plan.spec.file))


def check_before_run(
    plans: Sequence[RunPlan], settings: BackendSettings, folders: Mapping[str, Path | None],
    files: Mapping[str, Path | None] | None = None,
) -> None:
    """What would otherwise be found only after every request was sent, as an InputError now:
    a file's base URL the key may not go to, an output folder or a report file (by option:
    --record, --junit ...) that cannot be written."""
    from glmrun.safety.atomic import check_writable

    check_base_urls(plans, settings)
    for option, folder in folders.items():
        if folder is not None:
            check_writable(folder, option)
    for option, file in (files or {}).items():
        if file is not None:
            check_writable(file.parent, option, file=file)


def run_redactor(settings: BackendSettings, plans: Sequence[RunPlan] = ()) -> Redactor:
    """The redactor for everything a run writes: the API key (and its halves) and the
    credentials of every base URL in play."""
    from glmrun.safety.baseurl import BASE_URL_ENV_VAR, ZAI_BASE_URL_ENV_VAR, credentials
    from glmrun.safety.redaction import Redactor, env_keys

    urls = {settings.base_url, os.environ.get(BASE_URL_ENV_VAR),
            os.environ.get(ZAI_BASE_URL_ENV_VAR),
            *(plan.spec.base_url for plan in plans)}
    keys = [*env_keys(), *env_keys(settings.dotenv)]
    return Redactor([*keys, *(c for u in urls for c in credentials(u))])


def last_failed(out_dir: Path) -> tuple[frozenset[str], dict[str, Any] | None]:
    """The ids of the runs in `out_dir` that did not pass (failed, error, not run), and its
    manifest (None for a folder older than run.json, read from its transcripts)."""
    from glmrun.output import manifest

    entries, _source = manifest.read_runs(out_dir)
    earlier = manifest.read(out_dir)
    if not entries and earlier is None:
        raise errors.NotARunError(
            f"--last-failed: {out_dir} holds no earlier run ({manifest.MANIFEST_NAME} or "
            "transcripts) to take the failures from")
    return frozenset(e.id for e in entries if e.status != "passed"), earlier


def _default_base_url(region: str | None = None) -> str:
    from glmrun.backends.regions import default_base_url

    return default_base_url(region)


@dataclass
class BackendSettings:
    """How to reach the model: real API, the in-process emulator, or a recording store."""

    mock: bool = False
    base_url: str | None = None
    timeout_s: float = 300.0
    pool_size: int = 10
    record_chunk_offsets: bool = False
    mock_config: Any = None
    wrap: Callable[[Backend], Backend] | None = None  # record / replay / cache layers
    needs_key: bool = True
    dotenv: Mapping[str, str] = field(default_factory=dict)  # the project's .env: a key
    allow_hosts: tuple[str, ...] = ()  # --allow-host: more hosts the key may be sent to
    project_hosts: tuple[str, ...] = ()  # the project file's allow_hosts: below the others
    # how to run without a key, as the missing-key message says it (the pytest plugin's differs)
    offline_hint: str = "add --mock to run against the built-in emulator"
    sdk: str = "zhipuai"  # zhipuai | zai: which SDK adapter calls the API
    region: str = "cn"  # cn (open.bigmodel.cn) | intl (api.z.ai): see backends/regions.py


def api_key(settings: BackendSettings) -> str | None:
    """The region's key from the environment, else from the project's .env (the environment
    wins)."""
    from glmrun.backends.regions import find_api_key

    return (find_api_key(where=settings.region)
            or find_api_key(settings.dotenv, where=settings.region))


def price_table(path: Path | None) -> PriceTable:
    """glmrun's price table, overridden by a price file (an InputError if it is bad)."""
    from glmrun.models import PriceTable, load_prices

    if path is None:
        return PriceTable()
    try:
        return PriceTable(load_prices(path))
    except ValueError as exc:
        raise errors.InputError(str(exc)) from None


@contextlib.contextmanager
def open_backend(settings: BackendSettings, *, offer_offline: bool = True) -> Iterator[tuple[Callable[[str | None], Backend], str | None, tuple[str, ...]]]:  # noqa: E501
    """Yield (backend factory per base URL, the run's base URL override, secrets to redact).

    `offer_offline`: the missing-key message says how to run without a key
    (`settings.offline_hint`), where the command can."""
    from glmrun.backends.regions import region
    from glmrun.safety.baseurl import KeyHosts

    backend_type = sdk_backend(settings.sdk)

    server = None
    base_url = settings.base_url
    key = api_key(settings)
    hosts = KeyHosts.from_environment(settings.allow_hosts, base_url,
                                      project=settings.project_hosts)
    try:
        if settings.mock:
            from glmrun.mock import MockConfig, MockServer

            server = MockServer(settings.mock_config or MockConfig()).start()
            base_url = server.base_url
            key = key or MOCK_KEY
        if key is None:
            if settings.needs_key:
                names = region(settings.region).key_env_vars
                how = (f"set {names[0]}" + (f" (or {', '.join(names[1:])})" if names[1:]
                                            else "") + " or put it in the project's .env")
                raise errors.MissingKeyError(
                    f"no API key: {how}, or {settings.offline_hint}" if offer_offline else
                    f"no API key: {how} (a key of the account that submitted the batches)")
            key = "unused"

        def factory(url: str | None) -> Backend:
            if base_url is None and url is not None:  # the last gate before the key leaves
                hosts.check(url, "base URL")
            backend: Backend = backend_type(
                api_key=key, base_url=base_url or url, region=settings.region,
                timeout_s=settings.timeout_s,
                pool_size=settings.pool_size,
                record_chunk_offsets=settings.record_chunk_offsets,
            )
            return settings.wrap(backend) if settings.wrap else backend

        yield factory, base_url, ((key,) if key not in (MOCK_KEY, "unused") else ())
    finally:
        if server is not None:
            server.stop()


SDKS = ("zhipuai", "zai")


def sdk_backend(sdk: str) -> Callable[..., Backend]:
    """The adapter class of an SDK name (zhipuai, the default, or zai)."""
    if sdk == "zai":
        from glmrun.backends.zai import ZaiBackend, require_sdk

        require_sdk()
        return ZaiBackend
    if sdk == "zhipuai":
        from glmrun.backends.zhipu import ZhipuBackend

        return ZhipuBackend
    raise errors.InputError(f"unknown SDK {sdk!r} (known: {', '.join(SDKS)})")


def run_plans(
    plans: Sequence[RunPlan],
    settings: BackendSettings,
    options: RunOptions,
    reporter: Reporter | None = None,
    *,
    on_runner: Callable[[Any], None] | None = None,
    batch: BatchOptions | None = None,
) -> RunSummary:
    """Run the plans to the end (or an interrupt) and return the summary.

    Batch-mode plans go through `glmrun.batch` (after the others), with `batch`'s settings.
    """
    from glmrun.run.conversation import now_iso

    started_at = now_iso()
    summary = _run(plans, settings, options, reporter, on_runner=on_runner, batch=batch)
    if options.manifest:
        from glmrun.output import manifest

        data = manifest.build(
            plans, summary, out_dir=options.out_dir, formats=options.formats,
            command=options.command, started_at=started_at, finished_at=now_iso(),
            settings={"concurrency": options.concurrency, **options.run_settings},
            earlier=options.earlier_manifest,
        )
        try:
            manifest.write(options.out_dir, data, run_redactor(settings, plans).with_secrets(
                options.secrets))  # the command line may hold a secret
            from glmrun.output import matrix

            if matrix.is_matrix(data):
                from glmrun.safety.atomic import write_atomically

                write_atomically(options.out_dir / matrix.MARKDOWN_NAME,
                                 [matrix.render_markdown(data).encode("utf-8")], durable=False)
        except OSError as exc:
            summary.fatal = summary.fatal or errors.OutputError(
                f"cannot write {options.out_dir}/{manifest.MANIFEST_NAME}: {exc}")
    return summary


def _run(
    plans: Sequence[RunPlan],
    settings: BackendSettings,
    options: RunOptions,
    reporter: Reporter | None,
    *,
    on_runner: Callable[[Any], None] | None,
    batch: BatchOptions | None,
) -> RunSummary:
    import dataclasses

    from glmrun.run.runner import Runner

    check_base_urls(plans, settings)
    redactor = run_redactor(settings, plans)
    with open_backend(settings) as (factory, base_url, secrets):
        options = dataclasses.replace(
            options, base_url=base_url,
            secrets=tuple(options.secrets) + secrets + redactor.secrets,
        )
        if any(plan.mode == "batch" for plan in plans):
            from glmrun.batch.commands import run_mixed
            from glmrun.batch.options import BatchOptions

            return run_mixed(plans, factory, options, reporter, batch or BatchOptions(),
                             on_runner=on_runner)
        runner = Runner(factory, options, reporter)
        if on_runner is not None:
            on_runner(runner)
        try:
            return runner.run(plans)
        finally:
            runner.close()


# -- batch mode: collecting batches later ----------------------------------------------


@contextlib.contextmanager
def open_batch_api(settings: BackendSettings) -> Iterator[Callable[[str | None], BatchApi]]:
    """Yield the batch API per base URL (a batch lives on the server that created it)."""
    from glmrun.batch.commands import as_batch_api

    with open_backend(settings, offer_offline=False) as (factory, _base_url, _secrets):
        apis: dict[str | None, BatchApi] = {}

        def api_for(url: str | None) -> BatchApi:
            if url not in apis:
                apis[url] = as_batch_api(factory(url))
            return apis[url]

        try:
            yield api_for
        finally:
            for api in apis.values():
                api.close()


@dataclass(frozen=True)
class SavedBatchRun:
    """The batch run recorded in an output folder's state, to resume it (`batch fetch`)."""

    selection: Selection
    formats: tuple[str, ...]
    base_url: str | None


def saved_batch_run(out_dir: Path) -> SavedBatchRun | None:
    """The selection, formats and base URL of the batch run saved in out_dir, if any."""
    from glmrun.batch.state import BatchState
    from glmrun.plan.shards import parse_shard

    run = BatchState.load(out_dir).run
    if not run:
        return None
    sel = run["selection"]
    selection = Selection(
        paths=tuple(Path(p) for p in sel["paths"]), cli_vars=dict(sel.get("vars") or {}),
        mode=sel.get("mode"), model=sel.get("model"), models=tuple(sel.get("models") or ()),
        name_filter=sel.get("filter"), limit=sel.get("limit"), repeat=sel.get("repeat"),
        only_ids=frozenset(sel["only_ids"]) if sel.get("only_ids") is not None else None,
        shard=parse_shard(sel["shard"]) if sel.get("shard") else None,
    )
    return SavedBatchRun(selection, tuple(run.get("formats") or ("json", "md")),
                         run.get("base_url"))
