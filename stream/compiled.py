"""The processor's pure core and the collector's per-event work compiled with mypyc, used
only while they match the sources.

`make` builds it (tools/compile_core.py) into build/core/: one extension module per
source in MODULES, their shared library, and a manifest of the sha256 of each source as
compiled. At `import stream`, install() hashes those sources as they are now (about a
millisecond): only when every hash and the Python match does Python import the compiled
modules. An edited source, a missing or failed build, another Python, or
CLICKSTREAM_PURE_PYTHON=1 means pure Python for all of them: the compiled modules call
each other directly, so one stale module in a mix would still run its old code.

The compiled code checks annotations at run time (a `str` parameter given an int raises
TypeError), so an annotation there must say what the code really gets (BENCHMARKS.md,
sixth session).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from stream.config import REPO_ROOT, SettingsError, _bool

MODULES = (  # not stream.records: msgspec reads EventRecord's annotations (EVENTS)
    "stream.sessionize.rules",
    "stream.sessionize.ids",
    "stream.sessionize.assign",
    "stream.journey.state",
    "stream.journey.cart",
    "stream.journey.facts",
    "stream.journey.consent",
    "stream.journey.effects",
    "stream.journey.records",
    "stream.journey.machine",
    "stream.journey.merge",
    "stream.journey.people",
    "stream.journey.process",
    "stream.metrics.figures",
    "stream.metrics.windows",
    "stream.metrics.observe",
    "stream.processor.schedule",
    "stream.processor.engine",
    # The collector's per-event work (server.py, publish.py: aiohttp and aiokafka, stay pure).
    "stream.collector.clock",
    "stream.collector.consent",
    "stream.collector.intake",
    "stream.collector.validate",
    "stream.collector.normalize",
    "stream.collector.accept",
    "stream.enrich.enricher",
    "stream.enrich.campaign",
    "stream.enrich.ip",
    "stream.enrich.referrer",
    "stream.enrich.useragent",
)
GROUP = "stream_core"  # mypyc's shared library is the top-level module GROUP__mypyc
LIBRARY = f"{GROUP}__mypyc"
BUILD_DIR = REPO_ROOT / "build" / "core"
MANIFEST = "manifest.json"
PURE_PYTHON = "CLICKSTREAM_PURE_PYTHON"  # read here, before settings: see config.py

# What install() decided, for the processor's start-up log line.
STATUS = "pure Python (not checked)"


def source_path(module: str, root: Path = REPO_ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_hashes(root: Path = REPO_ROOT) -> dict[str, str]:
    return {m: hashlib.sha256(source_path(m, root).read_bytes()).hexdigest() for m in MODULES}


def platform() -> dict[str, str]:
    """What a build is only good for: this Python, this extension ABI."""
    return {
        "python": sys.implementation.cache_tag,
        "suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
    }


def unusable(manifest: Mapping, root: Path, build: Path) -> str | None:
    """Why the build described by `manifest` cannot stand in for the sources under
    `root` (None: it can)."""
    if {k: manifest.get(k) for k in platform()} != platform():
        return f"built for another Python ({manifest.get('python')})"
    files = manifest.get("files") or {}
    if set(files) != {*MODULES, LIBRARY}:
        return "built for another list of modules"
    if missing := [n for n, f in files.items() if not (build / f).is_file()]:
        return f"{missing[0]} is missing from {build}"
    hashes = manifest.get("sources") or {}
    for module, digest in source_hashes(root).items():
        if hashes.get(module) != digest:
            return f"{source_path(module, root).relative_to(root)} changed since the build"
    return None


class _Finder:
    """Imports the compiled extension of each listed module instead of its source (a
    meta path finder; not derived from importlib.abc, whose import costs 20 ms)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = files

    def find_spec(self, name, path=None, target=None):
        file = self.files.get(name)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(name, str(file))
        return importlib.machinery.ModuleSpec(name, loader, origin=str(file))


def install(
    root: Path = REPO_ROOT, build: Path = BUILD_DIR, environ: Mapping[str, str] = os.environ
) -> str:
    """Use the compiled modules if they match the sources; says which way it went."""
    global STATUS
    STATUS = _decide(root, build, environ)
    return STATUS


def _decide(root: Path, build: Path, environ: Mapping[str, str]) -> str:
    try:
        forced = _bool(PURE_PYTHON, environ.get(PURE_PYTHON, "0"))
    except SettingsError:
        forced = False  # config.load() names the bad value and exits
    if forced:
        return f"pure Python ({PURE_PYTHON}=1)"
    reason = check(root, build)
    if reason is not None:
        return f"pure Python ({reason})"
    if already := [m for m in MODULES if m in sys.modules]:
        return f"pure Python ({already[0]} was imported before the check)"
    manifest = json.loads((build / MANIFEST).read_bytes())
    files = {name: build / file for name, file in manifest["files"].items()}
    sys.meta_path.insert(0, _Finder(files))
    return f"compiled (mypyc, {len(MODULES)} modules from {build})"


def check(root: Path = REPO_ROOT, build: Path = BUILD_DIR) -> str | None:
    """Why the build cannot be used for the sources (None: it can)."""
    try:
        manifest = json.loads((build / MANIFEST).read_bytes())
    except FileNotFoundError:
        return "not compiled: `make compile` builds it"
    except (OSError, ValueError) as exc:
        return f"unreadable {build / MANIFEST}: {exc}"
    try:
        reason = unusable(manifest, root, build)
    except OSError as exc:  # a listed source deleted or unreadable
        reason = str(exc)
    return None if reason is None else f"{reason}; `make compile` rebuilds it"
