"""Ray connections: join a cluster or start the embedded one, count its trial slots, start a test cluster.

`connect()` is the one place alphasearch calls `ray.init`. With no address (and no `RAY_ADDRESS`) it
starts a private local instance with this machine's CPUs; with one it joins that cluster. Either way it
stays quiet: no dashboard, no worker output echoed to the driver, Ray's own logging at WARNING.

`trial_slots()` answers "how many trials of this shape can run at once": per alive node,
floor(node CPUs / CPUs per trial) (and the same for GPUs when trials need them), summed over nodes, so a
node that joins later adds its slots.

`LocalCluster` starts a real multi-node cluster on this machine as separate `ray start` processes (a head
plus workers, each in its own temp dir) for tests, benchmarks and trying scale-out without machines:

    >>> with LocalCluster(nodes=2, cpus_per_node=1) as cluster:  # doctest: +SKIP
    ...     connect(cluster.address)
    ...     trial_slots(1, 0)
    2

NOTE: `ray stop` kills every Ray process of the user on the machine, other people's clusters included,
so `LocalCluster.stop()` never calls it: it ends exactly the processes its own nodes started, by PID.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import ray

# Ray phones home on start unless told not to; there is no network here, and users did not ask for it.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Results are kilobytes, so the object store only needs Ray's minimum-ish; the default (30% of RAM)
# would reserve gigabytes of /dev/shm on a laptop.
EMBEDDED_OBJECT_STORE_BYTES = 200 * 1024**2

_connect_lock = threading.Lock()


def connect(address: str | None = None) -> None:
    """Connect this process to Ray once: `address`, else $RAY_ADDRESS, else a new embedded instance.

    A process that is already connected stays on its cluster (Ray allows one per process). Safe to call
    from several threads at once (the service's scheduler slots each open an executor).
    """
    with _connect_lock:
        if not ray.is_initialized():
            _init(address or os.environ.get("RAY_ADDRESS") or None)


def _init(address: str | None) -> None:
    quiet: dict[str, Any] = {
        "log_to_driver": False,
        "configure_logging": True,
        "logging_level": logging.WARNING,
    }
    if address:
        ray.init(address=address, **quiet)
        return
    # "local", not None: None would join any cluster someone else `ray start`ed on this machine.
    embedded: dict[str, Any] = {
        "address": "local",
        "include_dashboard": False,
        "object_store_memory": EMBEDDED_OBJECT_STORE_BYTES,
    }
    if threading.current_thread() is threading.main_thread():
        ray.init(**embedded, **quiet)
    else:
        _init_in_keeper_thread({**embedded, **quiet})


def _init_in_keeper_thread(kwargs: dict[str, Any]) -> None:
    """Start the embedded instance from a thread that lives as long as the process.

    NOTE: Ray starts its GCS and raylet with PR_SET_PDEATHSIG, which Linux ties to the *thread* that
    forked them: started from a short-lived thread (a service scheduler slot, say), the whole instance
    is SIGKILLed when that thread ends, and every run on it fails with NodeDiedError.
    """
    started = threading.Event()
    failure: list[BaseException] = []

    def keep() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        started.set()
        if not failure:
            threading.Event().wait()  # forever: the process's exit ends this daemon thread, and Ray with it

    threading.Thread(target=keep, name="alphasearch-ray-keeper", daemon=True).start()
    started.wait()
    if failure:
        raise failure[0]


def alive_nodes() -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


def trial_slots(num_cpus: float, num_gpus: float) -> int:
    """How many trials needing `num_cpus` CPUs and `num_gpus` GPUs each the alive nodes hold at once."""
    slots = 0
    for node in alive_nodes():
        resources = node.get("Resources", {})
        fits = _fits(resources.get("CPU", 0.0), num_cpus)
        if num_gpus > 0:
            fits = min(fits, _fits(resources.get("GPU", 0.0), num_gpus))
        slots += fits
    return slots


def _fits(available: float, per_trial: float) -> int:
    if per_trial <= 0:
        return 1 << 30
    return math.floor(available / per_trial + 1e-9)  # 1.0 / 0.1 must be 10, not 9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head node plus `nodes - 1` worker nodes, each a separate `ray start --block` process tree.

    `env` is added to every node's environment (its Ray workers inherit it), e.g. ALPHASEARCH_DATA_DIR.
    """

    def __init__(
        self,
        nodes: int = 2,
        cpus_per_node: int = 1,
        *,
        env: dict[str, str] | None = None,
        object_store_bytes: int = 100 * 1024**2,
        start_timeout_s: float = 60.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes: a cluster needs at least the head node")
        self.n_nodes, self.cpus_per_node = nodes, cpus_per_node
        # One auth mode for every node, explicitly: left unset, Ray 2.60 turns token auth on for a head
        # that finds ~/.ray/auth_token but not for the nodes joining it (nor for drivers), which are then
        # refused. Disabled is what a driver that does not ask for tokens expects; the nodes listen on
        # 127.0.0.1 only.
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.object_store_bytes = object_store_bytes
        self.start_timeout_s = start_timeout_s
        # Short root: Ray's unix socket paths live under it and must stay below ~107 characters.
        self.root = Path(tempfile.mkdtemp(prefix="asray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._nodes: list[subprocess.Popen[bytes]] = []

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        try:
            for _ in range(self.n_nodes):
                self.add_node()
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, cpus: int | None = None) -> int:
        """Start one more node (the head first); return its index. Waits until `ray start` says it is up."""
        index = len(self._nodes)
        node_dir = self.root / f"n{index}"
        node_dir.mkdir()
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--block",
            f"--num-cpus={self.cpus_per_node if cpus is None else cpus}",
            "--num-gpus=0",
            f"--temp-dir={node_dir}",
            f"--object-store-memory={self.object_store_bytes}",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            # Several nodes share this machine: give each its own ports instead of Ray's fixed defaults.
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        if index == 0:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false"]
        else:
            cmd += [f"--address={self.address}"]
        log = open(node_dir / "ray-start.log", "wb")  # noqa: SIM115 - lives as long as the node
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        self._nodes.append(proc)
        self._wait_started(proc, node_dir / "ray-start.log")
        return index

    def _wait_started(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "Ray runtime started" in text:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"`ray start` exited with {proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"`ray start` did not come up within {self.start_timeout_s:.0f} s; see {log}")

    def node_pids(self, index: int) -> list[int]:
        """PIDs of one node's process tree (`ray start`, raylet, GCS on the head, agents, workers)."""
        psutil = _psutil()
        try:
            root = psutil.Process(self._nodes[index].pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def pids(self) -> list[int]:
        """PIDs of every node's process tree."""
        return [pid for index in range(len(self._nodes)) for pid in self.node_pids(index)]

    def kill_node(self, index: int) -> None:
        """Lose a node abruptly (SIGKILL to its whole process tree), as when a machine dies."""
        psutil = _psutil()
        _kill(
            [psutil.Process(pid) for pid in self.node_pids(index) if psutil.pid_exists(pid)], graceful=False
        )

    def stop(self) -> None:
        """End every process this cluster started (by PID, never `ray stop`) and delete its temp dir."""
        psutil = _psutil()
        procs: dict[int, Any] = {}  # pid -> psutil.Process
        for index in range(len(self._nodes)):
            for pid in self.node_pids(index):
                try:
                    procs[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    pass
        # Processes that outlived their parent (re-parented to init) still name our temp dir.
        marker = str(self.root)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(marker in part for part in proc.info["cmdline"] or ()):
                    procs[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        procs[child.pid] = child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        procs.pop(os.getpid(), None)
        _kill(list(procs.values()), graceful=True)
        for node in self._nodes:
            try:
                node.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _psutil() -> ModuleType:
    """psutil as Ray ships it (ray/thirdparty_files, put on sys.path by `import ray`) or installed."""
    import psutil

    return psutil


def _kill(procs: list[Any], *, graceful: bool) -> None:  # psutil.Process objects
    psutil = _psutil()
    if graceful:
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, procs = psutil.wait_procs(procs, timeout=5)
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)
