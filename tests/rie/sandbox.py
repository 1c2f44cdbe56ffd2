"""Inside a private mount namespace: put layers at /opt and code at /var/task as Lambda does, then exec.

Run as `unshare --mount --map-root-user -- python sandbox.py PLAN.json`. Nothing here touches the
machine's real /opt or /var: the namespace gets a tmpfs over /var (the host's /var entries are bound
back into it, so the rest of the system looks unchanged) and bind mounts over /opt, all of which vanish
with the namespace. Stdlib only: it runs before anything is importable from the sandbox.

PLAN.json: {"scratch": dir, "mounts": [[source, target, read_only]], "cwd": dir, "argv": [...], "env": {...}}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()  # a mount point for a file
    _mount("--rbind", source, target)
    if read_only:
        _mount("-o", "remount,bind,ro", target)


def _private_var(scratch: str) -> None:
    """A tmpfs over /var that still shows the host's /var entries (bound back one by one)."""
    host_var = os.path.join(scratch, "host-var")
    os.makedirs(host_var, exist_ok=True)
    _mount("--rbind", "/var", host_var)
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/var")
    for name in os.listdir(host_var):
        source, target = os.path.join(host_var, name), os.path.join("/var", name)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        else:
            _bind(source, target, read_only=False)


def main() -> None:
    """Mount, then replace this process with the plan's command."""
    with open(sys.argv[1], encoding="utf-8") as fh:
        plan = json.load(fh)
    _mount("--make-rprivate", "/")
    _private_var(plan["scratch"])
    for source, target, read_only in plan["mounts"]:
        _bind(source, target, read_only)
    os.chdir(plan["cwd"])
    os.execve(plan["argv"][0], plan["argv"], plan["env"])  # noqa: S606 - the plan is ours


if __name__ == "__main__":
    main()
