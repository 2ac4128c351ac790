"""A real two-node Ray cluster on loopback, shared by the tests of a module in this folder.

`ray start --head` and a second `ray start --address`, as a user starts a cluster on two
machines, here both on 127.0.0.1 with their own temp dir and free ports, so they never meet
another cluster on the machine. Each `ray start` runs in a new session, and every process it
leaves behind (GCS, raylets, dashboard, agents, the workers the raylets fork) keeps that
session id: the teardown kills exactly those processes, never `ray stop`, which would take
every other Ray cluster of the user down with it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # the venv's `ray`, `mmindex` and the python jobs run with
CPUS_PER_NODE = 2  # logical: an encoder actor holds one, Ray's own tasks get the other


@dataclass(frozen=True)
class Cluster:
    address: str  # "127.0.0.1:PORT", what --ray-address takes
    dashboard: str  # "http://127.0.0.1:PORT", what `ray job submit --address` takes
    env: dict  # the environment of a client: PATH with `ray`, RAY_AUTH_MODE when needed
    head_node: str  # node ids, as Ray's state API reports them
    worker_node: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skip_reason() -> str | None:
    if not (BIN / "ray").exists():
        return f"the `ray` command is not installed beside {sys.executable}"
    if importlib.util.find_spec("aiohttp") is None:  # the dashboard and its job server
        return "Ray's job server is not installed: pip install -e '.[cluster]' (ray[default])"
    return None


def _client_env() -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)  # a client names this cluster, never one from the shell
    # Ray Train gives its workers 60 s to start; two torch processes on a loaded 2-core
    # machine can take longer. The nodes' processes inherit this from `ray start`.
    env.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    if (Path.home() / ".ray" / "auth_token").exists():
        env["RAY_AUTH_MODE"] = "token"  # a head started with a token wants it from everyone
    return env


def _ray_start(args: list[str], env: dict, temp_dir: str) -> subprocess.Popen:
    """One `ray start` in its own session, whose id every process it leaves behind keeps."""
    return subprocess.Popen(
        [str(BIN / "ray"), "start", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
         f"--num-cpus={CPUS_PER_NODE}", f"--dashboard-agent-listen-port={free_port()}",
         f"--metrics-export-port={free_port()}", "--include-log-monitor=false",
         "--disable-usage-stats", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def _started(process: subprocess.Popen) -> None:
    try:
        output, _ = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"`{' '.join(process.args[1:])}` failed:\n{output[-3000:]}")


def _wait_for_port(port: int, starting: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if starting.poll():  # `ray start` failed: say why at once
            _started(starting)
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        time.sleep(0.2)


def _owner_and_session(pid: str) -> tuple[int, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat")
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after the parenthesised name
        return stat.stat().st_uid, int(fields[3])  # field 6: state, ppid, pgrp, session
    except (OSError, IndexError):  # gone meanwhile
        return None


def _processes_of(sessions: set[int]) -> list[int]:
    own = os.getuid()
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and (found := _owner_and_session(p.name)) and found[0] == own
            and found[1] in sessions]


def kill_cluster(sessions: set[int]) -> None:
    """SIGKILL every process of these sessions and wait until they are gone."""
    deadline = time.monotonic() + 30
    while (pids := _processes_of(sessions)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    assert not pids, f"cluster processes still alive after SIGKILL: {pids}"


def _wait_for_nodes(dashboard: str, count: int) -> dict[str, bool]:
    """node id -> is head, once `count` nodes are alive (Ray's state API, over HTTP)."""
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    deadline = time.monotonic() + 90
    while True:
        try:
            alive = {n.node_id: n.is_head_node for n in list_nodes(address=dashboard)
                     if n.state == "ALIVE"}
        except (RayStateApiException, OSError):  # the dashboard still starting
            alive = {}
        if len(alive) >= count:
            return alive
        assert time.monotonic() < deadline, f"{len(alive)} of {count} Ray nodes alive"
        time.sleep(0.5)


@pytest.fixture(scope="module")  # gone once its tests ran: an idle cluster holds ~1 GB
def cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = _client_env()
    saved = os.environ.get("RAY_AUTH_MODE")
    if "RAY_AUTH_MODE" in env:  # this process asks the state API and submits jobs too
        os.environ["RAY_AUTH_MODE"] = env["RAY_AUTH_MODE"]
    temp_dir = tempfile.mkdtemp(prefix="mmray-")  # short: Ray's socket paths must stay < 108
    gcs, dashboard = free_port(), free_port()
    sessions: set[int] = set()
    try:
        head = _ray_start(
            ["--head", f"--port={gcs}", f"--ray-client-server-port={free_port()}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}"], env, temp_dir)
        sessions.add(head.pid)
        _wait_for_port(gcs, head)  # the second node joins as soon as the GCS listens
        node = _ray_start([f"--address=127.0.0.1:{gcs}"], env, temp_dir)
        sessions.add(node.pid)
        _started(head)
        _started(node)
        nodes = _wait_for_nodes(f"http://127.0.0.1:{dashboard}", 2)
        yield Cluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", env,
                      next(n for n, is_head in nodes.items() if is_head),
                      next(n for n, is_head in nodes.items() if not is_head))
    finally:
        try:
            kill_cluster(sessions)
        finally:  # the temp dir and this process's environment, whatever the kill said
            shutil.rmtree(temp_dir, ignore_errors=True)
            if saved is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = saved

