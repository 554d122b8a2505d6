"""The installed layout: import names, no top-level `models` / `datasets`, a working `harness` command."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("lnm_harness-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_installs_only_the_harness_package(wheel):
    top_level = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"harness"}
    names = set(wheel.namelist())
    # Every module of the source tree is in the wheel, under its import name (a new subpackage must be listed in
    # pyproject's `packages`, or an installed harness misses it).
    for folder, prefix in (("harness", "harness"), ("models", "harness/models"), ("datasets", "harness/datasets")):
        for source in (REPO / folder).rglob("*.py"):
            assert f"{prefix}/{source.relative_to(REPO / folder).as_posix()}" in names, source


def test_import_names_resolve_to_the_repository_folders():
    import harness.datasets
    import harness.models

    assert Path(harness.datasets.__file__).parent == REPO / "datasets"
    assert Path(harness.models.__file__).parent == REPO / "models"


def test_harness_command_help():
    harness = str(Path(sys.executable).parent / "harness")  # the console script of this environment
    result = subprocess.run([harness, "--help"], capture_output=True, text=True, check=True, cwd="/")
    for command in ("synth", "data"):
        assert command in result.stdout
    check = subprocess.run([harness, "data", "check", "--help"], capture_output=True, text=True, check=True)
    assert "--json" in check.stdout and "--on-error" in check.stdout
