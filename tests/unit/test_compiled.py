"""The compiled core (stream/compiled.py): used when built and current, never when stale."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import stream.journey.process
from stream import compiled

pytestmark = pytest.mark.unit

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
built = pytest.mark.skipif(
    compiled.check() is not None, reason=f"no current build: {compiled.check()}"
)


def _import_in(root: Path, **env: str) -> str:
    """In a fresh interpreter whose `stream` is the one under `root`: the decision and
    where the journey core came from."""
    code = "import stream, stream.journey.process as p; print(stream.compiled.STATUS); print(p.__file__)"
    environ = {k: v for k, v in os.environ.items() if k != compiled.PURE_PYTHON}
    environ.update(PYTHONPATH=str(root), **env)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@built
def test_the_current_build_is_in_use():
    if os.environ.get(compiled.PURE_PYTHON) == "1":
        pytest.skip("pure Python asked for")
    assert compiled.STATUS.startswith("compiled"), compiled.STATUS
    assert stream.journey.process.__file__.endswith(SUFFIX)
    for name in compiled.MODULES:
        module = importlib.import_module(name)
        assert module.__file__.startswith(str(compiled.BUILD_DIR)), name


@built
def test_pure_python_when_asked():
    out = _import_in(compiled.REPO_ROOT, CLICKSTREAM_PURE_PYTHON="1")
    assert "CLICKSTREAM_PURE_PYTHON=1" in out
    assert out.splitlines()[1].endswith("stream/journey/process.py")


@built
def test_an_edited_source_falls_back_to_pure_python(tmp_path):
    # A copy of the package and its build: compiled as is, pure once a source changes.
    shutil.copytree(
        compiled.REPO_ROOT / "stream",
        tmp_path / "stream",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(compiled.BUILD_DIR, tmp_path / "build" / "core")
    status, origin = _import_in(tmp_path).splitlines()
    assert status.startswith("compiled") and origin.endswith(SUFFIX)

    with (tmp_path / "stream" / "journey" / "state.py").open("a") as f:
        f.write("\n# an edit\n")
    status, origin = _import_in(tmp_path).splitlines()
    assert "stream/journey/state.py changed since the build" in status
    assert origin == str(tmp_path / "stream" / "journey" / "process.py")


# --- the check itself, on made-up builds ---------------------------------------------


def _fake_build(tmp_path: Path) -> tuple[dict, Path]:
    build = tmp_path / "core"
    files = {m: m.replace(".", "/") + SUFFIX for m in compiled.MODULES}
    files[compiled.LIBRARY] = compiled.LIBRARY + SUFFIX
    for file in files.values():
        (build / file).parent.mkdir(parents=True, exist_ok=True)
        (build / file).write_bytes(b"")
    manifest = {**compiled.platform(), "files": files, "sources": compiled.source_hashes()}
    return manifest, build


def test_a_matching_build_is_usable(tmp_path):
    manifest, build = _fake_build(tmp_path)
    assert compiled.unusable(manifest, compiled.REPO_ROOT, build) is None


def test_a_changed_source_makes_the_build_unusable(tmp_path):
    manifest, build = _fake_build(tmp_path)
    manifest["sources"]["stream.journey.machine"] = "0" * 64
    reason = compiled.unusable(manifest, compiled.REPO_ROOT, build)
    assert reason == "stream/journey/machine.py changed since the build"


def test_another_python_or_module_list_or_a_missing_file_makes_it_unusable(tmp_path):
    manifest, build = _fake_build(tmp_path)
    other = {**manifest, "python": "cpython-399"}
    assert "another Python" in compiled.unusable(other, compiled.REPO_ROOT, build)
    fewer = {**manifest, "files": dict(list(manifest["files"].items())[1:])}
    assert "list of modules" in compiled.unusable(fewer, compiled.REPO_ROOT, build)
    (build / manifest["files"]["stream.journey.process"]).unlink()
    assert "stream.journey.process is missing" in compiled.unusable(
        manifest, compiled.REPO_ROOT, build
    )


def test_no_build_or_a_bad_manifest_means_pure_python(tmp_path):
    assert compiled.check(compiled.REPO_ROOT, tmp_path / "none").startswith("not compiled")
    (tmp_path / compiled.MANIFEST).write_text("{not json")
    assert "unreadable" in compiled.check(compiled.REPO_ROOT, tmp_path)
    manifest, build = _fake_build(tmp_path / "b")
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    assert compiled.check(compiled.REPO_ROOT, build) is None
