"""The schemas are found from this (editable) install and from a built wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = ("convo.schema.json", "transcript.schema.json")


def test_schemas_are_package_resources_and_the_repo_folder_is_the_same_files() -> None:
    for name in SCHEMAS:
        packaged = files("glmrun") / "schemas" / name
        assert json.loads(packaged.read_text("utf-8"))["$schema"].endswith("2020-12/schema")
        assert (REPO / "schemas" / name).read_bytes() == packaged.read_bytes()


def test_the_license_is_the_mit_text_pyproject_names() -> None:
    assert 'license = "MIT"' in (REPO / "pyproject.toml").read_text("utf-8")
    assert (REPO / "LICENSE").read_text("utf-8").startswith("MIT License\n")


def test_one_repository_url_names_the_schemas_and_the_package() -> None:
    from glmrun import REPOSITORY
    from glmrun.load.project import tomllib

    urls = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["urls"]
    assert urls["Repository"] == REPOSITORY
    for name in (*SCHEMAS, "project.schema.json"):
        schema = json.loads((files("glmrun") / "schemas" / name).read_text("utf-8"))
        assert schema["$id"] == f"{REPOSITORY}/schemas/{name}"


@pytest.mark.slow
def test_a_built_wheel_ships_the_schemas_and_finds_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("glmrun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in SCHEMAS:
        assert f"glmrun/schemas/{name}" in names
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert zipfile.ZipFile(wheel).read(license_file) == (REPO / "LICENSE").read_bytes()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA")))
    assert b"\nLicense-Expression: MIT\n" in metadata
    report = REPO / "glmrun" / "report"  # the HTML report's templates and inline assets
    for path in [*report.glob("templates/*.j2"), *report.glob("assets/*")]:
        assert path.relative_to(REPO).as_posix() in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import glmrun, json; from importlib.resources import files;"
            "print(glmrun.__file__);"
            "print(json.loads((files('glmrun')/'schemas'/'convo.schema.json').read_text())['title'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    where, title = out.stdout.strip().splitlines()
    assert where.startswith(str(site))  # the wheel's copy, not the checkout
    assert title
