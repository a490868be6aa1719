"""What a non-editable install holds (as in the Docker image), and how the Dockerfile builds."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "Dockerfile"
# What the Dockerfile copies into the image, and so all that a build may need.
BUILD_INPUTS = ("pyproject.toml", "README.md", "bot", "handlers")
PINNED_PYTHON = re.compile(r"^FROM python:3\.11\.\d+-slim-bookworm$", re.M)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the project's wheel from the files the Dockerfile copies, as `pip install .` does."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "box-bot"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(work),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [path] = work.glob("box_bot-*.whl")
    return path


def test_the_wheel_ships_the_manifest_and_the_github_schema(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("bot/ops/app.yml") == (ROOT / "app.yml").read_bytes()
    assert "bot/sim/rest-api-subset.json" in names
    assert "handlers/__init__.py" in names


def test_register_finds_the_installed_manifest_from_another_directory(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # a pure-Python wheel installs by unpacking
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -S: no .pth files, so the editable install of this checkout cannot answer `import bot`.
    path = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
    environ = {k: v for k, v in os.environ.items() if k not in ("GITHUB_URL", "WEBHOOK_PROXY_URL")}
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-m",
            "bot.cli",
            "register",
            "--webhook-url",
            "https://smee.io/box-bot-test",
            "--port",
            "0",
            "--timeout",
            "0.2",
        ],
        cwd=elsewhere,
        env={**environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"Using the manifest {site / 'bot' / 'ops' / 'app.yml'}."
    assert lines[-1].startswith(
        "box-bot register: GitHub did not send the browser back within 0.2 s"
    )
    assert result.returncode == 1
    assert os.listdir(elsewhere) == []


def dockerfile_lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_base_image_is_pinned_to_a_patch_release() -> None:
    assert PINNED_PYTHON.search(DOCKERFILE.read_text(encoding="utf-8"))


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    lines = dockerfile_lines()
    index = {line: number for number, line in enumerate(lines)}
    copy_packaging = index["COPY pyproject.toml ./"]
    [install_deps] = [n for n, line in enumerate(lines) if "pip install -r" in line]
    copy_code = index["COPY bot ./bot"]
    [install_code] = [n for n, line in enumerate(lines) if "pip install --no-deps ." in line]
    assert copy_packaging < install_deps < copy_code < install_code
    assert index["COPY handlers ./handlers"] < install_code
    # Nothing but pyproject.toml reaches the image before the dependencies are in.
    assert [line for line in lines[:install_deps] if line.startswith(("COPY", "ADD"))] == [
        "COPY pyproject.toml ./"
    ]


def test_the_dependency_step_lists_exactly_the_project_dependencies() -> None:
    [step] = [line for line in dockerfile_lines() if "pip install -r" in line]
    command = step.removeprefix("RUN ").split(" > ")[0]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-c"]
    listed = subprocess.run(
        [sys.executable, "-c", argv[2]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed == declared
    assert "python-dotenv>=1.0" in listed


def test_the_image_gets_the_manifest_as_package_data() -> None:
    lines = dockerfile_lines()
    assert "COPY bot ./bot" in lines
    assert (ROOT / "bot" / "ops" / "app.yml").read_bytes() == (ROOT / "app.yml").read_bytes()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "app.yml" in package_data["bot.ops"]
