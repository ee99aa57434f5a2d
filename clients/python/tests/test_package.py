"""The package as shipped: generated code in sync with the protos, the sdist and the typed
wheel `python -m build` makes, versioned from clients/VERSION, and a consumer project that
installs the wheel, type-checks the README's pipeline and the example strictly, and runs them
against their own server."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import fileengine.finetune

from harness import start_harness

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "src" / "fileengine" / "finetune" / "v1"
VERSION = (ROOT.parent / "VERSION").read_text().strip()


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "gen.sh"), str(tmp_path)], check=True, capture_output=True)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in GENERATED.iterdir() if p.is_file())
    assert fresh == committed, "run clients/python/gen.sh"
    stale = [n for n in fresh if (tmp_path / n).read_bytes() != (GENERATED / n).read_bytes()]
    assert stale == [], "run clients/python/gen.sh"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel as the README makes them (`python -m build`: the sdist, then
    the wheel from the sdist), with the pinned backend rather than a download."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (sdist,) = out.glob("fileengine_finetune-*.tar.gz")
    (wheel,) = out.glob("fileengine_finetune-*.whl")
    return sdist, wheel


def test_the_version_is_clients_version(artifacts: tuple[Path, Path]) -> None:
    sdist, wheel = artifacts
    assert VERSION
    assert sdist.name == f"fileengine_finetune-{VERSION}.tar.gz"
    assert wheel.name == f"fileengine_finetune-{VERSION}-py3-none-any.whl"
    assert fileengine.finetune.__version__ == VERSION
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {VERSION}" in changelog, "CHANGELOG.md has no entry for clients/VERSION"


def test_the_wheel_is_typed_and_complete(artifacts: tuple[Path, Path]) -> None:
    sdist, wheel = artifacts
    names = set(zipfile.ZipFile(wheel).namelist())
    package = "fileengine/finetune/"
    for name in [
        "py.typed",
        "__init__.py",
        "client.py",
        "aio.py",
        "errors.py",
        "_shared.py",
        "enums.py",
        "enums.pyi",
    ]:
        assert package + name in names
    for module in ["completion_pb2", "dataset_pb2", "job_pb2", "service_pb2", "service_pb2_grpc"]:
        assert f"{package}v1/{module}.py" in names
        assert f"{package}v1/{module}.pyi" in names
    assert "fileengine/__init__.py" not in names  # a namespace package
    assert not [n for n in names if n.startswith(("tests/", "examples/"))]

    with tarfile.open(sdist) as tar:
        top = f"fileengine_finetune-{VERSION}/"
        members = {m.name.removeprefix(top) for m in tar.getmembers()}
    for name in ["PKG-INFO", "pyproject.toml", "README.md", "CHANGELOG.md", "gen.sh"]:
        assert name in members
    assert "src/fileengine/finetune/py.typed" in members
    assert "src/fileengine/finetune/v1/job_pb2.pyi" in members


def readme_pipeline() -> str:
    """The first Python example under the README's `## Use`: the pipeline a newcomer copies."""
    readme = (ROOT / "README.md").read_text()
    use = readme[readme.index("\n## Use\n") :]
    start = use.index("```python\n") + len("```python\n")
    return use[start : use.index("```", start)]


def installed_package(python: str, project: Path) -> list[str]:
    """The version and the location of the package that `python` imports in `project`."""
    return subprocess.run(
        [python, "-c", "import fileengine.finetune as f; print(f.__version__); print(f.__file__)"],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()


def test_a_consumer_installs_the_wheel_and_runs_the_readme_pipeline(
    artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    # A project of its own outside the SDK's folder, with a fresh venv: the wheel as the README
    # installs it, and mypy with the stubs grpcio and protobuf do not ship, at our pins.
    _, wheel = artifacts
    project = tmp_path / "consumer"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(project / ".venv")], check=True)
    python = str(project / ".venv" / "bin" / "python")
    pip = [python, "-m", "pip", "--quiet", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "install", "--constraint", str(ROOT / "requirements.txt"), str(wheel),
         "mypy", "types-grpcio", "types-protobuf"],
        check=True,
    )  # fmt: skip
    installed = installed_package(python, project)
    assert installed[0] == VERSION
    assert Path(installed[1]).is_relative_to(project / ".venv")

    (project / "pipeline.py").write_text(readme_pipeline())
    shutil.copy(ROOT / "examples" / "pipeline.py", project / "example.py")
    typed = subprocess.run(
        [python, "-m", "mypy", "--strict", "pipeline.py", "example.py"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert typed.returncode == 0, typed.stdout + typed.stderr

    # Its own server: both promote a model to the `fast` tier.
    with start_harness(tmp_path / "harness.log") as harness:
        readme = subprocess.run(
            [python, "pipeline.py", harness.address, str(harness.sample_dataset)],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        example = subprocess.run(
            [python, "example.py", str(harness.sample_dataset), "--addr", harness.address],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert readme.returncode == 0, readme.stderr
    lines = readme.stdout.splitlines()
    assert lines[0].startswith("13 0 ")  # examples, errors, estimated cost
    assert float(lines[-1]) > 0  # the streamed completion's cost

    assert example.returncode == 0, example.stderr
    out = example.stdout
    assert "training-data.jsonl: 13 examples" in out
    assert "0 errors" in out
    assert "] SUCCEEDED: " in out
    assert "succeeded: ft:gpt-4o-2024-08-06:" in out
    assert "fast (ft:gpt-4o-2024-08-06:" in out

    # The README's other way: pip builds the package from the folder (its backend from PyPI).
    subprocess.run([*pip, "install", "--force-reinstall", "--no-deps", str(ROOT)], check=True)
    assert installed_package(python, project) == installed
