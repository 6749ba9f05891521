"""didray.jobs, the Ray Jobs client (tests/test_jobs_cli.py covers the commands without a cluster).

Fast tests need no cluster (addresses, tokens, what a job runs, bad input refused before
connecting). The slow ones start a real head node with `ray start --head --block` on free
ports, a private temp dir and its own auth token, submit sweeps/ci.yaml to it through the
client and the commands, and stop only that node (SIGTERM to its PID) at the end.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl
import pytest
import requests
from support.fixtures import free_port
from support.sweeps import warm

from didray import jobs
from didray.cli import main
from didray.config.load import SweepFileError

ROOT = Path(__file__).parents[1]
CI_SWEEP = ROOT / "sweeps" / "ci.yaml"


# ---------------------------------------------------------------- fast: no cluster


def test_prepare_finds_the_sweep_file_in_the_working_dir():
    upload = jobs.prepare(CI_SWEEP, ROOT)
    assert (upload.sweep.name, upload.root, upload.sweep_rel) == ("ci", ROOT.resolve(),
                                                                  "sweeps/ci.yaml")


def test_prepare_refuses_an_invalid_sweep(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CI_SWEEP.read_text()).replace("steps: 6", "steps: -1"))
    with pytest.raises(SweepFileError) as err:
        jobs.prepare(bad, tmp_path)
    assert "train.steps" in err.value.report()


def test_prepare_refuses_a_sweep_outside_the_working_dir(tmp_path):
    with pytest.raises(jobs.ClusterError, match="outside the working directory"):
        jobs.prepare(CI_SWEEP, tmp_path)


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
    assert cmd == jobs.env_check() + " && python -m didray.cli run 'sweeps/my sweep.yaml' " \
                  "--storage /shared/results --resume"
    env = jobs.runtime_env(ROOT)
    assert env["working_dir"] == str(ROOT) and "pip" not in env and "env_vars" not in env
    assert {".venv/", "results/", ".git/", "__pycache__/"} <= set(env["excludes"])
    assert jobs.runtime_env(ROOT, ["vllm==0.9"])["pip"] == ["vllm==0.9"]


@pytest.mark.parametrize("cwd", [ROOT, ROOT / "docs"])
def test_the_sweeps_local_inputs_are_uploaded_whatever_their_kind(cwd, monkeypatch, tmp_path):
    """Parquet and safetensors files are not uploaded (stray results, checkpoints), except the
    sweep's own inputs: its dataset directory and QA file here, under Ray's own matcher. They
    are read from the sweep file's directory, wherever `didray submit` runs."""
    from ray._private.runtime_env.packaging import _get_excludes

    monkeypatch.chdir(cwd)
    upload = jobs.prepare(ROOT / "sweeps/smollm2-cpu.yaml", ROOT)
    assert upload.inputs == ("sweeps/data/smollm2-prompts", "sweeps/data/smollm2-qa.jsonl")
    excluded = _get_excludes(ROOT, jobs.runtime_env(ROOT, inputs=upload.inputs)["excludes"])
    assert not excluded(ROOT / "sweeps/data/smollm2-prompts/train.parquet")
    assert excluded(ROOT / "sweeps/data/elsewhere.parquet")
    assert excluded(ROOT / "model.safetensors") and excluded(ROOT / "results/x/trials.parquet")
    outside = tmp_path / "prefs"
    outside.mkdir()
    with pytest.raises(jobs.ClusterError, match="is outside the working directory"):
        jobs.prepare(ROOT / "sweeps/smollm2-cpu.yaml", ROOT, [f"data.source={outside}"])


def test_env_check_names_what_the_job_python_lacks():
    """Run as the job's shell would: exit 2 and one line naming only the missing modules."""
    python = os.path.dirname(sys.executable)  # the check calls `python` from PATH
    env = {**os.environ, "PATH": f"{python}:{os.environ['PATH']}"}
    bad = subprocess.run(jobs.env_check(("json", "no_such_mod_a", "no_such_mod_b")), shell=True,
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "didray job: the cluster Python lacks no_such_mod_a, no_such_mod_b; install didray "
        "with its dependencies in the image, or pass --pip"]
    good = subprocess.run(jobs.env_check(), shell=True, capture_output=True, text=True, env=env)
    assert (good.returncode, good.stderr) == (0, "")


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
def jobs_client(ray_head, monkeypatch) -> jobs.Cluster:
    """The client connected to the test's head node with its token."""
    url, token = ray_head
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    jobs_client = jobs.connect(url)
    assert jobs_client.url == url
    return jobs_client


def wait_for(jobs_client: jobs.Cluster, job_id: str, states: tuple[str, ...],
             timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while (state := jobs.status(jobs_client, job_id)[0].status) not in states:
        if time.monotonic() > deadline:
            tail = "".join(jobs.logs(jobs_client, job_id))[-3000:]
            raise AssertionError(f"{job_id} still {state} after {timeout_s} s:\n{tail}")
        time.sleep(2)
    return state


def test_auth_refused_is_bad_input(ray_head, monkeypatch, capsys):
    url, _ = ray_head
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    assert main(["status", "--address", url]) == 2
    assert "refused the authentication token" in capsys.readouterr().err
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # didray sends no token now, but a Ray client that this process initialised earlier (the
    # ci_sweep fixture's ray.init) may attach its cached local token: refused either way.
    assert main(["status", "--address", url]) == 2
    assert re.search("(requires an|refused the) authentication token", capsys.readouterr().err)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert main(["logs", "no-such-job", "--address", url, "--follow"]) == 2
    assert "refused" in capsys.readouterr().err


def test_submit_ci_sweep_end_to_end(jobs_client, warm_cache, tmp_path, capsys):
    storage = warm(tmp_path / "store", warm_cache)
    job_id = jobs.submit(jobs_client, jobs.prepare(CI_SWEEP, ROOT), storage=storage)
    assert job_id.startswith("didray-ci-")
    assert wait_for(jobs_client, job_id, jobs.TERMINAL, timeout_s=600) == "SUCCEEDED", \
        "".join(jobs.logs(jobs_client, job_id))[-3000:]

    trials = pl.read_parquet(storage / "ci" / "trials.parquet")
    assert trials.height == 4 and trials["status"].to_list() == ["TERMINATED"] * 4

    row = jobs.status(jobs_client, job_id)[0]
    assert (row.status, row.sweep) == ("SUCCEEDED", "ci")
    assert job_id in [r.job_id for r in jobs.status(jobs_client)]
    text = "".join(jobs.logs(jobs_client, job_id))
    assert "[didray] ray: running trials" in text and "step 6/6" in text
    assert text.count("finished") >= 4 and "DID entropy vs downstream scores" in text
    assert "".join(jobs.logs(jobs_client, job_id, follow=True)).startswith(text[:200])

    # The commands print the same, exit 0; an unknown job is bad input.
    url = jobs_client.url
    assert main(["status", "--address", url]) == 0
    assert job_id in capsys.readouterr().out
    assert main(["status", job_id, "--address", url]) == 0
    assert capsys.readouterr().out == f"{job_id}: SUCCEEDED ({row.message})\n"
    assert main(["stop", job_id, "--address", url]) == 0
    assert capsys.readouterr().out == f"{job_id}: had already ended\n"
    assert main(["logs", "no-such-job", "--address", url]) == 2
    assert "no job 'no-such-job'" in capsys.readouterr().err


def test_stop_a_running_sweep(jobs_client, warm_cache, tmp_path):
    storage = warm(tmp_path / "store", warm_cache)
    job_id = jobs.submit(jobs_client, jobs.prepare(CI_SWEEP, ROOT), storage=storage)
    wait_for(jobs_client, job_id, ("RUNNING", *jobs.TERMINAL), timeout_s=120)
    assert jobs.stop(jobs_client, job_id) is True
    assert wait_for(jobs_client, job_id, jobs.TERMINAL, timeout_s=120) == "STOPPED"
