"""Inside a private mount namespace: put layers at /opt and code at /var/task as Lambda does, then exec.

Run as `unshare --mount --map-root-user -- python sandbox.py PLAN.json`. Nothing here touches the
machine's real /opt or /var: the namespace gets a tmpfs over /var (the host's /var entries are bound
back into it, so the rest of the system looks unchanged) and bind mounts over /opt, all of which vanish
with the namespace. Stdlib only: it runs before anything is importable from the sandbox.

PLAN.json: {"scratch": dir, "mounts": [[source, target, read_only]], "cwd": dir, "argv": [...], "env": {...},
            "network": {...}}  (optional; see _container_network)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time


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


def _hosts_file(scratch: str, names: dict[str, str]) -> None:
    """--add-host entries, as Docker writes them into the container's /etc/hosts."""
    path = os.path.join(scratch, "hosts")
    with open("/etc/hosts", encoding="utf-8") as fh:
        text = fh.read()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + "".join(f"{ip}\t{name}\n" for name, ip in names.items()))
    _mount("--bind", path, "/etc/hosts")


def _relays(network: dict[str, object], ready: int) -> None:
    """In the container's namespace: the bridge address's ports out, then (once the RIE listens) 8080 in."""
    sys.path.insert(0, str(network["relay_path"]))
    from local.relay import Relay  # stdlib only

    for address, port, path in network["out"]:  # type: ignore[attr-defined]
        Relay(("tcp", address, int(port)), ("unix", path)).start()
    os.write(ready, b"1")
    os.close(ready)
    path, port = network["published"]  # type: ignore[misc]
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    Relay(("unix", path), ("tcp", "127.0.0.1", int(port))).start()
    threading.Event().wait()  # until the namespace goes (its PID 1, the RIE, exits)


def _container_network(scratch: str, network: dict[str, object]) -> None:
    """A bridge container's network: loopback up, the extra hosts, the relays in a child process."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address, _, _ in network["out"]:  # type: ignore[attr-defined]
        if not str(address).startswith("127."):
            subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    if network["hosts"]:
        _hosts_file(scratch, network["hosts"])  # type: ignore[arg-type]
    ready, done = os.pipe()
    if os.fork() == 0:
        os.close(ready)
        _relays(network, done)
        os._exit(0)
    os.close(done)
    os.read(ready, 1)  # the way out is open before the function starts
    os.close(ready)


def main() -> None:
    """Mount, then replace this process with the plan's command."""
    with open(sys.argv[1], encoding="utf-8") as fh:
        plan = json.load(fh)
    _mount("--make-rprivate", "/")
    _private_var(plan["scratch"])
    for source, target, read_only in plan["mounts"]:
        _bind(source, target, read_only)
    if plan.get("network"):
        _container_network(plan["scratch"], plan["network"])
    os.chdir(plan["cwd"])
    os.execve(plan["argv"][0], plan["argv"], plan["env"])  # noqa: S606 - the plan is ours


if __name__ == "__main__":
    main()
