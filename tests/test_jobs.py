"""`didray submit|status|logs|stop` through the Ray Jobs API.

Fast tests need no cluster (bad input is refused before anything is uploaded, unreachable
addresses exit 2). The slow ones start a real head node with `ray start --head --block` on free
ports, a private temp dir and its own auth token, submit sweeps/ci.yaml to it, and stop only
that node (SIGTERM to its PID) at the end.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl
import pytest
import requests

from didray import jobs
from didray.cli import Parser, main
from didray.config.load import SweepFileError
from didray.errors import BadInput

ROOT = Path(__file__).parents[1]
CI_SWEEP = ROOT / "sweeps" / "ci.yaml"


def parse(*argv: str):
    parser = Parser(prog="didray")
    jobs.add_job_commands(parser.add_subparsers(dest="command", required=True,
                                                parser_class=Parser))
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def closed_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there once the socket is closed


# ---------------------------------------------------------------- fast: no cluster


@pytest.mark.parametrize("argv", [
    ("status",), ("status", "some-job"), ("logs", "some-job"), ("logs", "some-job", "--follow"),
    ("stop", "some-job"), ("submit", str(CI_SWEEP), "--working-dir", str(ROOT))])
def test_unreachable_address_is_bad_input(argv, closed_address):
    args = parse(*argv, "--address", closed_address)
    with pytest.raises(BadInput) as err:
        args.func(args)
    report = err.value.report()
    assert f"http://{closed_address}" in report and "cannot reach the Ray dashboard" in report
    assert "\n" not in report  # one paragraph


def test_cli_exits_2_without_traceback(closed_address, capsys):
    assert main(["status", "--address", closed_address]) == 2
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err


def test_invalid_sweep_refused_before_connecting(tmp_path, closed_address):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CI_SWEEP.read_text()).replace("steps: 6", "steps: -1"))
    # The address is closed: had submit connected first, this would be a ClusterError.
    with pytest.raises(SweepFileError) as err:
        jobs.submit(bad, closed_address, working_dir=tmp_path)
    assert "train.steps" in err.value.report()


def test_sweep_outside_working_dir_refused(tmp_path, closed_address):
    with pytest.raises(jobs.ClusterError, match="outside the working directory"):
        jobs.submit(CI_SWEEP, closed_address, working_dir=tmp_path)


def test_addresses(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobs.dashboard_url("head:8265") == "http://head:8265"
    assert jobs.dashboard_url("https://head.example/ray/") == "https://head.example/ray"
    with pytest.raises(jobs.ClusterError, match="dashboard"):
        jobs.dashboard_url("ray://head:10001")
    with pytest.raises(jobs.ClusterError, match="RAY_ADDRESS"):
        jobs.dashboard_url(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://from-env:8265")
    assert jobs.dashboard_url(None) == "http://from-env:8265"
    assert parse("status").address == "http://from-env:8265"


def test_token_lookup(monkeypatch, tmp_path):
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs.read_token() is None  # Ray's rule: no RAY_AUTH_MODE=token, no token sent
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert jobs.read_token() == "from-env"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / "tok").write_text("from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert jobs.read_token() == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(jobs.ClusterError, match="cannot be read"):
        jobs.read_token()


def test_entrypoint_and_runtime_env():
    cmd = jobs.entrypoint("sweeps/my sweep.yaml", "/shared/results", resume=True)
    assert cmd == "python -m didray.cli run 'sweeps/my sweep.yaml' --storage /shared/results " \
                  "--resume"
    env = jobs.runtime_env(ROOT)
    assert env["working_dir"] == str(ROOT) and "pip" not in env and "env_vars" not in env
    assert {".venv/", "results/", ".git/", "__pycache__/"} <= set(env["excludes"])
    assert jobs.runtime_env(ROOT, ["vllm==0.9"])["pip"] == ["vllm==0.9"]


# ---------------------------------------------------------------- slow: a real head node


def _pids_using(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def ray_head():
    """(dashboard URL, auth token) of a head node this fixture starts and stops."""
    temp_dir = tempfile.mkdtemp(prefix="drt-", dir="/tmp")  # unix socket paths must be short
    token = uuid.uuid4().hex
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",  # jobs run `python`
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # SIGTERM: stop now, no 30 s drain
            "RAY_USAGE_STATS_ENABLED": "0"}
    dash = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dash,
             "--ray-client-server-port": free_port(), "--node-manager-port": free_port(),
             "--object-manager-port": free_port(), "--metrics-export-port": free_port(),
             "--dashboard-agent-listen-port": free_port(),
             "--dashboard-agent-grpc-port": free_port(),
             "--runtime-env-agent-port": free_port()}
    low = 20000 + random.randrange(100) * 100  # workers' ports; Ray's default is 10002-19999
    cmd = [str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus", "2",
           "--dashboard-host", "127.0.0.1",
           "--temp-dir", temp_dir, "--min-worker-port", str(low),
           "--max-worker-port", str(low + 99), "--disable-usage-stats",
           *(str(x) for kv in ports.items() for x in kv)]
    log = open(Path(temp_dir) / "ray-start.log", "w")  # noqa: SIM115
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, (Path(temp_dir) / "ray-start.log").read_text()
            try:
                # Any answer means the dashboard is up; 200 means the token is accepted.
                if requests.get(f"{url}/api/jobs/", timeout=5,
                                headers={"Authorization": f"Bearer {token}"}).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the Ray dashboard did not come up in 120 s"
            time.sleep(1)
        yield url, token
    finally:
        head.send_signal(signal.SIGTERM)  # only the node this fixture started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # its own session: only its processes
            head.wait()
        log.close()
        deadline = time.monotonic() + 30
        while _pids_using(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _pids_using(temp_dir)
        for pid in left:  # processes of this node that outlived it
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", temp_dir], check=False)
        assert not left, f"processes of the test's Ray node outlived it: {left}"


@pytest.fixture
def as_client(ray_head, monkeypatch):
    url, token = ray_head
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    return url


def wait_for(url: str, job_id: str, states: tuple[str, ...], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while (state := jobs.status(url, job_id)[0].status) not in states:
        if time.monotonic() > deadline:
            tail = "".join(jobs.logs(url, job_id))[-3000:]
            raise AssertionError(f"{job_id} still {state} after {timeout_s} s:\n{tail}")
        time.sleep(2)
    return state


@pytest.mark.slow
def test_auth_refused_is_bad_input(ray_head, monkeypatch):
    url, _ = ray_head
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    args = parse("status", "--address", url)
    with pytest.raises(BadInput, match="refused the authentication token"):
        args.func(args)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # didray sends no token now, but a Ray client that this process initialised earlier (the
    # ci_sweep fixture's ray.init) may attach its cached local token: refused either way.
    with pytest.raises(BadInput, match="(requires an|refused the) authentication token"):
        args.func(args)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    args = parse("logs", "no-such-job", "--address", url, "--follow")
    with pytest.raises(BadInput, match="refused"):
        args.func(args)


@pytest.mark.slow
def test_submit_ci_sweep_end_to_end(as_client, tmp_path, capsys):
    url = as_client
    storage = tmp_path / "store"
    job_id = jobs.submit(CI_SWEEP, url, storage=storage, working_dir=ROOT)
    assert job_id.startswith("didray-ci-")
    assert wait_for(url, job_id, jobs.TERMINAL, timeout_s=300) == "SUCCEEDED", \
        "".join(jobs.logs(url, job_id))[-3000:]

    trials = pl.read_parquet(storage / "ci" / "trials.parquet")
    assert trials.height == 4 and trials["status"].to_list() == ["TERMINATED"] * 4

    row = jobs.status(url, job_id)[0]
    assert (row.status, row.sweep) == ("SUCCEEDED", "ci")
    assert job_id in [r.job_id for r in jobs.status(url)]
    text = "".join(jobs.logs(url, job_id))
    assert "[didray] ray: running trials" in text and "step 6/6" in text
    assert text.count("finished") >= 4 and "DID entropy vs downstream scores" in text
    assert "".join(jobs.logs(url, job_id, follow=True)).startswith(text[:200])

    # The command handlers print the same, exit 0; an unknown job is bad input.
    args = parse("status", "--address", url)
    assert args.func(args) == 0
    assert job_id in capsys.readouterr().out
    args = parse("stop", job_id, "--address", url)
    assert args.func(args) == 0
    assert "already ended" in capsys.readouterr().out
    args = parse("logs", "no-such-job", "--address", url)
    with pytest.raises(BadInput, match="no job 'no-such-job'"):
        args.func(args)


@pytest.mark.slow
def test_stop_a_running_sweep(as_client, tmp_path):
    url = as_client
    job_id = jobs.submit(CI_SWEEP, url, storage=tmp_path / "store", working_dir=ROOT)
    wait_for(url, job_id, ("RUNNING", *jobs.TERMINAL), timeout_s=120)
    assert jobs.stop(url, job_id) is True
    assert wait_for(url, job_id, jobs.TERMINAL, timeout_s=120) == "STOPPED"
