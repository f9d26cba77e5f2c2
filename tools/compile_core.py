"""Compile the processor's pure core with mypyc into build/core/ (stream/compiled.py).

    python tools/compile_core.py          # `make compile`; run, test and bench call it

Nothing to do when the build matches the sources. Otherwise it compiles a snapshot of
the package in a temporary directory (the sources can change meanwhile: the manifest
holds the hashes of what was compiled) and swaps the new build in whole. Any failure
(no C compiler, no mypy, a type error mypyc refuses) prints one line and exits 0:
everything then runs as pure Python. The full output is in build/core.log.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream import compiled  # noqa: E402

LOG = compiled.BUILD_DIR.parent / "core.log"

# Run in the snapshot, away from the repository's pyproject.toml (setuptools would read
# it as the project being built).
SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify

setup(
    name="stream_core",
    ext_modules=mypycify(
        ["--ignore-missing-imports", "--follow-imports=silent", *sys.argv[3:]],
        group_name=sys.argv[1],
        opt_level=sys.argv[2],
    ),
    script_args=["build_ext", "--inplace"],
)
"""


def main() -> int:
    if compiled.check() is None:
        return 0  # current
    print("journey core: compiling with mypyc (a minute or two)...", flush=True)
    started = time.monotonic()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="core-") as tmp:
            _build(Path(tmp))
    except Exception as exc:  # noqa: BLE001 - any failure leaves pure Python, said once
        print(f"journey core: not compiled ({exc}); the processor runs as pure Python")
        return 0
    print(f"journey core: compiled in {time.monotonic() - started:.0f} s")
    return 0


def _build(tmp: Path) -> None:
    snapshot = tmp / "src"
    shutil.copytree(
        compiled.REPO_ROOT / "stream",
        snapshot / "stream",
        ignore=shutil.ignore_patterns("__pycache__", "static", "*.so"),
    )
    sources = compiled.source_hashes(snapshot)
    paths = [str(compiled.source_path(m, Path("."))) for m in compiled.MODULES]
    with LOG.open("w") as log:
        done = subprocess.run(
            [sys.executable, "-c", SETUP, compiled.GROUP, "3", *paths],
            cwd=snapshot,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise RuntimeError(f"mypyc failed, see {LOG}")
    suffix = compiled.platform()["suffix"]
    files = {m: m.replace(".", "/") + suffix for m in compiled.MODULES}
    files[compiled.LIBRARY] = compiled.LIBRARY + suffix
    staged = tmp / "core"
    for file in files.values():
        (staged / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(snapshot / file, staged / file)
    manifest = {**compiled.platform(), "files": files, "sources": sources}
    (staged / compiled.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    # Swapped in whole: a reader sees the old build or the new one, never a mix.
    target = compiled.BUILD_DIR
    old = target.with_name("core.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    shutil.move(str(staged), str(target))
    shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
