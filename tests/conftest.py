"""Shared fixtures: the emulator on loopback, and an environment without real API keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import KEY

from glmrun.mock import MockConfig, MockServer


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever sees a real key or base URL from the developer's shell."""
    for name in ("ZHIPUAI_API_KEY", "ZHIPU_API_KEY", "ZHIPUAI_BASE_URL", "ZAI_API_KEY",
                 "ZAI_BASE_URL", "GLMRUN_SDK", "GLMRUN_REGION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(MockConfig(async_polls=2)) as srv:
        yield srv


@pytest.fixture
def api(server: MockServer, monkeypatch: pytest.MonkeyPatch) -> MockServer:
    """The emulator as if it were the real API: a key in the environment."""
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    return server


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A run folder for the report tests (the examples, a failure, an error, hostile text, a
    second model) and its transcripts by id. Made once: the tests only read it."""
    from fixtures.report_runs import make_run

    tmp = tmp_path_factory.mktemp("report")
    return tmp / "out", make_run(tmp / "out", tmp)
