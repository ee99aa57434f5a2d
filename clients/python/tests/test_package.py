"""The package as shipped: generated code in sync with the protos, a typed wheel, and the
example pipeline running end to end against its own server."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from harness import start_harness

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "src" / "fileengine" / "finetune" / "v1"


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "gen.sh"), str(tmp_path)], check=True, capture_output=True)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in GENERATED.iterdir() if p.is_file())
    assert fresh == committed, "run clients/python/gen.sh"
    stale = [n for n in fresh if (tmp_path / n).read_bytes() != (GENERATED / n).read_bytes()]
    assert stale == [], "run clients/python/gen.sh"


def test_the_wheel_is_typed_and_complete(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("fileengine_finetune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = "fileengine/finetune/"
    for name in ["py.typed", "__init__.py", "client.py", "aio.py", "errors.py", "_shared.py"]:
        assert package + name in names
    for module in ["completion_pb2", "dataset_pb2", "job_pb2", "service_pb2", "service_pb2_grpc"]:
        assert f"{package}v1/{module}.py" in names
        assert f"{package}v1/{module}.pyi" in names
    assert "fileengine/__init__.py" not in names  # a namespace package
    assert not [n for n in names if n.startswith(("tests/", "examples/"))]


def test_the_example_pipeline_runs(tmp_path: Path) -> None:
    # Its own server: the example promotes a model to the `fast` tier.
    with start_harness(tmp_path / "harness.log") as harness:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "pipeline.py"), "--addr", harness.address],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "training-data.jsonl: 13 examples" in out
    assert "0 errors" in out
    assert "JOB_STATE_SUCCEEDED" in out
    assert "succeeded: ft:gpt-4o-2024-08-06:" in out
    assert "fast (ft:gpt-4o-2024-08-06:" in out
