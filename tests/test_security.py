"""Security: which files a conversation file may have read."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.e2e.harness import glmrun, transcripts, write

from glmrun.errors import OutsideSuiteError
from glmrun.suitefiles import inside_suite

# --- files read on a file's behalf ----------------------------------------------------------


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A suite folder with a secret next to it (outside) and symlinks out of it."""
    (tmp_path / "outside.csv").write_text("who\nTOP-SECRET-ROW\n", "utf-8")
    (tmp_path / "outside.py").write_text("def hook(**kw):\n    return 'TOP-SECRET-HOOK'\n",
                                         "utf-8")
    folder = tmp_path / "suite"
    (folder / "_data").mkdir(parents=True)
    (folder / "_data" / "ok.csv").write_text("who\nAnn\n", "utf-8")
    (folder / "_data" / "link.csv").symlink_to(tmp_path / "outside.csv")
    (folder / "out").symlink_to(tmp_path, target_is_directory=True)
    (folder / "inner.csv").symlink_to(folder / "_data" / "ok.csv")  # a link inside is fine
    (folder / "hooks.py").symlink_to(tmp_path / "outside.py")
    return folder


@pytest.mark.parametrize("ref", [
    "../outside.csv", "_data/../../outside.csv", str(Path("/") / "etc" / "hostname"),
    "_data/link.csv", "out/outside.csv", "./out/./outside.csv", "..\\outside.csv",
    "C:/outside.csv",
])
def test_a_cases_file_outside_the_suite_folder_is_refused(suite: Path, ref: str) -> None:
    if ref.startswith("/etc"):
        ref = str(suite.parent / "outside.csv")  # an absolute path to the very file
    path = write(suite, "c.yaml", f"""
        model: m
        messages: [{{role: user, content: "{{{{ who }}}}"}}]
        cases: "{ref.replace(chr(92), chr(92) * 2)}"
    """)
    result = glmrun("validate", path)
    assert result.exit_code == 2
    assert f"cases file '{ref}' is outside the suite folder" in result.stderr
    run = glmrun(path, "--mock", "-o", suite.parent / "o")
    assert run.exit_code == 2 and "TOP-SECRET" not in run.output


def test_a_cases_file_inside_the_suite_folder_still_works(suite: Path) -> None:
    for ref in ("_data/ok.csv", "inner.csv", "./_data/ok.csv"):
        path = write(suite, "c.yaml", f"""
            model: m
            messages: [{{role: user, content: "{{{{ who }}}}"}}]
            cases: {ref}
        """)
        assert glmrun("validate", path).exit_code == 0, ref


@pytest.mark.parametrize(("ref", "reason"), [
    ("hooks:hook", "module 'hooks.py' is outside the suite folder"),  # a symlink out
    ("out.outside:hook", "module 'out/outside.py' is outside the suite folder"),  # a folder link
    ("_data..outside:hook", "'_data..outside' is not a module name (dotted names only: a.b)"),
])
def test_a_python_hook_outside_the_suite_folder_is_refused(
    suite: Path, ref: str, reason: str
) -> None:
    path = write(suite, "h.yaml", f"""
        model: m
        messages: [{{role: user, content: hi}}]
        expect: [{{python: "{ref}"}}]
    """)
    result = glmrun(path, "--mock", "-o", suite.parent / "o", "-v")
    assert result.exit_code == 1  # a check that cannot load is a failed expectation
    data = next(iter(transcripts(suite.parent / "o").values()))
    assert data["expectations"][0]["reason"].endswith(reason)
    assert "TOP-SECRET" not in result.output


def test_a_hook_name_that_climbs_is_refused_by_the_schema(suite: Path) -> None:
    path = write(suite, "h.yaml", """
        model: m
        messages: [{role: user, content: hi}]
        expect: [{python: "..outside:hook"}]
    """)
    result = glmrun("validate", path)
    assert result.exit_code == 2 and "expect[0].python" in result.stderr


@pytest.mark.parametrize("ref", ["../outside.png", "out/outside.png", "/tmp/x.png"])
def test_images_and_includes_share_the_rule(suite: Path, ref: str) -> None:
    for what in ("image", "include"):
        with pytest.raises(OutsideSuiteError, match=f"^{what} '{ref}' is outside the suite"):
            inside_suite(suite, ref, what)
