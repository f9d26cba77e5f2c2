"""Make sure the system tools some tests need are installed; run by `make test` before pytest.

Each tool is looked up on PATH. Missing ones are installed with apt-get when this runs
as root on a Debian-like machine (one `apt-get update`, one `apt-get install`); no
service is started by the install. Prints one line per tool: present, installed, or
could not install (reason). Then the browser SDKs the drop-in tests load
(tests/browser/npm: `npm ci` from the committed package-lock.json) when node_modules
is missing or older than the lock file. Never fails: a test needing a missing tool
skips and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# tool on PATH -> Debian package that ships it
TOOLS = {
    "promtool": "prometheus",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "node": "nodejs",
    "npm": "npm",
}
# Debian's prometheus package would start a server on :9090 on install.
SERVICES = ("prometheus",)
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
APT_TIMEOUT_S = 1200
NPM_DIR = Path(__file__).resolve().parent / "browser" / "npm"
NPM_TIMEOUT_S = 600


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def why_not_installable() -> str | None:
    """The reason apt-get cannot be used here, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root; install with: sudo apt-get install " + " ".join(TOOLS.values())
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    return None


def apt_get(*args: str) -> str | None:
    """Run apt-get quietly; return None on success, else the last line of its output."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    try:
        done = subprocess.run(
            ["apt-get", "-qq", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"apt-get {args[0]} took more than {APT_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"apt-get {args[0]} exited with {done.returncode}"


def install(packages: list[str]) -> str | None:
    """apt-get update + install with service starts denied; None on success, else why not."""
    own_policy = not POLICY_RC_D.exists()
    if own_policy:  # tells invoke-rc.d not to start services during the install
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        error = apt_get("update")
        if error is None:
            error = apt_get("install", "-y", "--no-install-recommends", *packages)
    finally:
        if own_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    stop_services(packages)
    return error


def stop_services(packages: list[str]) -> None:
    """Stop a service the install may have started anyway (a machine with systemd running)."""
    for service in SERVICES:
        if service not in packages:
            continue
        if shutil.which("systemctl") and Path("/run/systemd/system").exists():
            commands = [["systemctl", "disable", "--now", service]]
        elif Path(f"/etc/init.d/{service}").exists() and shutil.which("service"):
            commands = [["service", service, "stop"]]
        else:
            continue
        for command in commands:
            subprocess.run(command, capture_output=True, timeout=60, check=False)


def npm_packages() -> str:
    """`npm ci` in tests/browser/npm when node_modules is missing or stale; one line."""
    lock, stamp = NPM_DIR / "package-lock.json", NPM_DIR / "node_modules" / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return "npm packages: present (tests/browser/npm/node_modules)"
    npm = shutil.which("npm")
    if npm is None:
        return "npm packages: could not install (no npm on PATH)"
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=NPM_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"npm packages: could not install (npm ci took more than {NPM_TIMEOUT_S} s)"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"npm packages: could not install ({lines[-1] if lines else done.returncode})"
    return "npm packages: installed (tests/browser/npm/node_modules)"


def main() -> int:
    missing = missing_tools()
    reason = None
    if missing:
        reason = why_not_installable()
        if reason is None:
            reason = install(sorted({TOOLS[tool] for tool in missing}))
    for tool in TOOLS:
        path = shutil.which(tool)
        if tool not in missing:
            print(f"{tool}: present ({path})")
        elif path:
            print(f"{tool}: installed ({path})")
        else:
            print(f"{tool}: could not install ({reason or 'not on PATH after install'})")
    print(npm_packages())
    return 0


if __name__ == "__main__":
    sys.exit(main())
