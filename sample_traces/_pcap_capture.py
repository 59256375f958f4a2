"""Capturing real traffic with dumpcap, for fixtures and sample bundles.

`capture(path, iface, bpf)` is a context manager: dumpcap runs (as root) until the block
ends, then stops cleanly (SIGINT), so the file is complete. Only loopback and the veth
addresses of namespaces made here are ever used as traffic targets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def capture(
    path: Path,
    ifaces: list[str] | str = "lo",
    bpf: str = "",
    pcap: bool = False,
    extra: list[str] | None = None,
    netns: str | None = None,
) -> Iterator[None]:
    """Runs dumpcap writing `path` (pcapng unless pcap=True) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    cmd = ["dumpcap", "-q"]
    for i in [ifaces] if isinstance(ifaces, str) else ifaces:
        cmd += ["-i", i]
        if bpf:
            cmd += ["-f", bpf]
    if pcap:
        cmd.append("-P")
    cmd += [*(extra or []), "-w", str(path)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    _wait_started(proc, path)
    try:
        yield
        time.sleep(0.3)  # let the last packets reach the ring buffer
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    os.chmod(path, 0o644)


def _wait_started(proc: subprocess.Popen, path: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"dumpcap exited: {err}")
        # dumpcap writes the section header as soon as capturing starts
        if path.exists() and path.stat().st_size > 0:
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise RuntimeError("dumpcap did not start within 10 s")


def run(*cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, input=input)


@contextlib.contextmanager
def netns_pair(name: str, host_ip: str, ns_ip: str, prefix: int = 24) -> Iterator[str]:
    """A network namespace `name` joined to the host by a veth pair (real Ethernet frames).
    Yields the host-side interface name; removes both on exit."""
    host_if, ns_if = f"{name}-h"[:15], f"{name}-n"[:15]
    run("ip", "netns", "del", name, check=False)
    run("ip", "link", "del", host_if, check=False)
    run("ip", "netns", "add", name)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", name)
        run("ip", "addr", "add", f"{host_ip}/{prefix}", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/{prefix}", "dev", ns_if)
        run("ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up")
        run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield host_if
    finally:
        run("ip", "link", "del", host_if, check=False)
        run("ip", "netns", "del", name, check=False)
