"""Run sweeps on a remote Ray cluster through the Ray Jobs API: the client side; the
`didray submit|status|logs|stop` commands over it are in didray/jobs_cli.py.

`didray submit FILE --address http://HEAD:8265` validates the sweep file here, uploads the
working directory (the project source and its sweep files; never .venv, results, .git or
caches) and starts `python -m didray.cli run FILE` on the cluster's head node as a Ray job.
The job's driver imports didray from the uploaded directory, so the cluster needs only the
project's dependencies (cluster/ installs them), not this exact checkout.

The address is the Ray dashboard's URL (port 8265 by default), as for `ray job submit`; the
commands default to the RAY_ADDRESS environment variable. A bare `HOST:PORT` means
`http://HOST:PORT`.

Token authentication (Ray >= 2.52; on by default since 2.59 only for a cluster that a local
`ray.init()` starts, announced for every cluster from 2.61): when RAY_AUTH_MODE=token, requests
carry the token that Ray itself would use: RAY_AUTH_TOKEN, else the file named by
RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (`ray get-auth-token` prints a cluster's token on
its head node).
Unreachable dashboards and refused tokens raise `BadInput`, so the CLI exits 2 with one
paragraph saying what to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from didray.errors import BadInput

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from didray.config.schema import Sweep

# Paths never uploaded with the working directory (gitignore syntax, relative to it). Ray
# also skips what the directory's .gitignore lists.
EXCLUDES = [".venv/", "venv/", "results/", ".git/", "__pycache__/", "*.pyc", "*.egg-info/",
            ".pytest_cache/", ".ruff_cache/", ".hypothesis/", ".mypy_cache/", ".didray-cache/",
            "build/", "dist/", "*.parquet", "*.safetensors"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
METADATA_KEY = "didray"  # every job didray submits carries metadata {"didray": <sweep name>}
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


class ClusterError(BadInput):
    """A cluster that cannot be reached or refuses us, or a job it does not know."""


# ---------------------------------------------------------------- connecting


def dashboard_url(address: str | None) -> str:
    """The Jobs API URL for `address` (an http(s) URL or HOST:PORT); RAY_ADDRESS if None."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ClusterError("no Ray cluster address: pass --address http://HEAD:8265 (the Ray "
                           "dashboard's URL) or set RAY_ADDRESS to it")
    address = address.strip().rstrip("/")
    scheme, sep, _ = address.partition("://")
    if not sep:
        return f"http://{address}"
    if scheme not in ("http", "https"):
        raise ClusterError(
            f"{address}: the Jobs API is served by the Ray dashboard; give its http(s) URL, "
            f"e.g. http://HEAD:8265 (`{scheme}://` addresses are for `didray run --address`)")
    return address


def read_token() -> str | None:
    """The token Ray would send, or None when RAY_AUTH_MODE is not `token` (Ray's own rule:
    an explicit cluster address never turns authentication on by itself)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        token = path.expanduser().read_text().strip()
    except OSError as err:
        raise ClusterError(f"RAY_AUTH_MODE=token but the token file {path} cannot be read "
                           f"({err.strerror}); set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or "
                           "copy the head node's token (`ray get-auth-token`) there") from None
    if not token:
        raise ClusterError(f"RAY_AUTH_MODE=token but the token file {path} is empty")
    return token


def auth_message(url: str, refused: bool) -> str:
    what = ("refused the authentication token" if refused
            else "requires an authentication token and none was sent")
    return (f"the Ray cluster at {url} {what}. Check RAY_AUTH_MODE=token is set here and that "
            "the token matches the cluster's (`ray get-auth-token` on the head node): it is "
            "read from RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH, else "
            "~/.ray/auth_token")


def unreachable_message(url: str) -> str:
    return (f"cannot reach the Ray dashboard at {url}. Check that the cluster is up (`ray "
            "status` on the head), that the address is the dashboard's (port 8265 unless "
            "--dashboard-port says otherwise; `ray dashboard cluster/<launcher>.yaml` or "
            "`kubectl port-forward svc/<cluster>-head-svc 8265` forwards it), and that the "
            "head started with --dashboard-host 0.0.0.0 if you connect from another machine")


@contextlib.contextmanager
def cluster_errors(url: str, job_id: str | None = None) -> Iterator[None]:
    """Turn the Jobs client's exceptions into `ClusterError` (what each means was found by
    trying: a closed port, a cluster with token auth, a wrong token, an unknown job id)."""
    import aiohttp
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as err:  # HTTP 401 (no token) or 403 (wrong token)
        raise ClusterError(auth_message(url, "failed" in str(err).split(":")[0])) from None
    except (ConnectionError, requests.RequestException, aiohttp.ClientConnectionError):
        # JobSubmissionClient raises the builtin ConnectionError; later calls raise requests'.
        raise ClusterError(unreachable_message(url)) from None
    except aiohttp.WSServerHandshakeError as err:  # following logs: the websocket refused
        if err.status in (401, 403):
            raise ClusterError(auth_message(url, err.status == 403)) from None
        if err.status == 404 and job_id:
            raise ClusterError(f"no job {job_id!r} on the Ray cluster at {url}") from None
        raise ClusterError(f"{url}: following the logs of {job_id} failed with HTTP "
                           f"{err.status}") from None
    except RuntimeError as err:  # the client's `_raise_error`: "status code 404: Job x ..."
        if "status code 404" in str(err) and job_id:
            raise ClusterError(f"no job {job_id!r} on the Ray cluster at {url}; `didray status "
                               f"--address {url}` lists didray's jobs") from None
        raise


def probe(url: str, timeout_s: float = 10.0) -> None:
    """Fail fast on an unreachable dashboard: the Jobs client waits on TCP without a timeout,
    which is minutes for a firewalled host. Any HTTP answer (even 401) counts as reachable."""
    import requests

    try:
        requests.get(f"{url}/api/version", timeout=timeout_s)
    except requests.RequestException:
        raise ClusterError(unreachable_message(url)) from None


def quiet_ray_packaging() -> None:
    """Ray logs each file it skips, each upload and each closed log stream at INFO/WARNING;
    didray prints the outcome itself."""
    import logging

    for name in ("ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir",
                 "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Cluster(NamedTuple):
    """A connected Jobs client and the dashboard URL it talks to (for messages)."""

    client: JobSubmissionClient
    url: str


def connect(address: str | None) -> Cluster:
    """The Jobs client for `address` and its URL; the client checks the connection."""
    from ray.job_submission import JobSubmissionClient

    quiet_ray_packaging()
    url = dashboard_url(address)
    token = read_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    probe(url)
    # Ray lets RAY_ADDRESS override an explicit address; here the explicit one wins.
    saved = {k: os.environ.pop(k) for k in _ADDRESS_ENV if k in os.environ}
    try:
        with cluster_errors(url):
            return Cluster(JobSubmissionClient(url, headers=headers), url)
    except RuntimeError as err:  # e.g. "Version check returned 404": another HTTP server
        raise ClusterError(f"{url} answered, but not as a Ray dashboard with the Jobs API "
                           f"({err}). Check the address: it is the Ray dashboard's URL, "
                           "port 8265 unless --dashboard-port says otherwise") from None
    finally:
        os.environ.update(saved)


# ---------------------------------------------------------------- the API


def runtime_env(working_dir: Path, pip: list[str] | None = None,
                inputs: Sequence[str] = ()) -> dict:
    """The job's runtime_env: the uploaded working directory, and pip packages if asked.
    `inputs` (paths relative to it: the sweep's local data and models) are uploaded even where
    EXCLUDES would skip them (a dataset in Parquet, a model's safetensors).

    No env_vars: the driver's own `ray.init(runtime_env=...)` sets didray's, and Ray refuses
    to merge a job's and a driver's runtime_env that both set the same variable."""
    kept = [f"!{p}{suffix}" for p in inputs for suffix in ("", "/**")]  # gitignore negation
    env: dict = {"working_dir": str(working_dir), "excludes": [*EXCLUDES, *kept]}
    if pip:
        env["pip"] = list(pip)
    return env


# What `didray run` imports before it can say anything; a cluster image without one of them
# would otherwise fail with a ModuleNotFoundError deep in the job log.
JOB_MODULES = ("didray", "ray", "torch", "transformers", "datasets", "pydantic", "polars")


def env_check(modules: tuple[str, ...] = JOB_MODULES) -> str:
    """A shell command that exits 2 with one line naming the modules the job's Python lacks."""
    code = ("import importlib.util, sys; "
            f"missing = [m for m in {list(modules)!r} if importlib.util.find_spec(m) is None]; "
            "missing and (print('didray job: the cluster Python lacks ' + ', '.join(missing) "
            "+ '; install didray with its dependencies in the image, or pass --pip', "
            "file=sys.stderr), sys.exit(2))")
    return shlex.join(["python", "-c", code])


def entrypoint(sweep_rel: str, storage: str | Path | None, resume: bool,
               overrides: Sequence[str] = ()) -> str:
    """The shell command the job runs in the uploaded working directory: the environment
    check, then the sweep."""
    args = ["python", "-m", "didray.cli", "run", sweep_rel, *overrides]
    if storage is not None:
        args += ["--storage", str(storage)]
    if resume:
        args.append("--resume")
    return f"{env_check()} && {shlex.join(args)}"


@dataclass(frozen=True)
class Upload:
    """A valid sweep file and the working directory that holds it."""

    sweep: Sweep
    root: Path  # the working directory, resolved
    sweep_rel: str  # the sweep file's path inside it, as the job will find it
    overrides: tuple[str, ...] = ()  # `key.path=value` arguments, validated with the file
    inputs: tuple[str, ...] = ()  # the sweep's local files inside it, uploaded whatever their kind


def local_inputs(sweep: Sweep, root: Path) -> tuple[str, ...]:
    """The paths the sweep reads from this machine (a local model, dataset, QA set or scorer:
    what exists here; hub names and python-package: paths do not), relative to `root`. One
    outside `root` is refused: the job runs in the uploaded copy of `root` and would not find
    it."""
    from didray.config.inputs import INPUT_FIELDS, value_at

    inputs = []
    # The loader wrote each as read from the sweep file's directory, relative to this one.
    for given in filter(None, (value_at(sweep, key) for key in INPUT_FIELDS)):
        path = Path(given).resolve()
        if not path.exists():
            continue
        if not path.is_relative_to(root):
            raise ClusterError(f"{given} is outside the working directory {root}, so the job "
                               "would not find it: move it there or pass --working-dir")
        inputs.append(path.relative_to(root).as_posix())
    return tuple(inputs)


def prepare(sweep_file: str | Path, working_dir: str | Path = ".",
            overrides: Sequence[str] = ()) -> Upload:
    """Validate `sweep_file` and check that `working_dir` holds it. Call it before `connect`:
    bad input is then reported as such, even for a cluster that cannot be reached."""
    from didray.config.load import load_sweep

    sweep = load_sweep(sweep_file, overrides)  # raises BadInput subclasses listing every error
    root = Path(working_dir).resolve()
    path = Path(sweep_file).resolve()
    if not root.is_dir():
        raise ClusterError(f"working directory {working_dir} does not exist")
    if not path.is_relative_to(root):
        raise ClusterError(f"{sweep_file} is outside the working directory {root}, so the job "
                           "would not find it: move it there or pass --working-dir")
    return Upload(sweep, root, path.relative_to(root).as_posix(), tuple(overrides),
                  local_inputs(sweep, root))


def submit(cluster: Cluster, upload: Upload, *, storage: str | Path | None = None,
           resume: bool = False, pip: list[str] | None = None) -> str:
    """Upload the working directory and start the sweep as a Ray job; returns its id.

    `storage` is a path on the cluster (shared storage for multi-node clusters; a relative
    one lands in the job's working directory on the head node)."""
    name = upload.sweep.name
    with cluster_errors(cluster.url):
        return cluster.client.submit_job(
            entrypoint=entrypoint(upload.sweep_rel, storage, resume, upload.overrides),
            submission_id=f"didray-{name}-{uuid.uuid4().hex[:8]}",
            runtime_env=runtime_env(upload.root, pip, upload.inputs),
            metadata={METADATA_KEY: name, "sweep_file": upload.sweep_rel})


@dataclass(frozen=True)
class JobRow:
    """One didray job as the cluster reports it."""

    job_id: str
    status: str
    sweep: str
    start: datetime | None
    end: datetime | None
    message: str

    @classmethod
    def from_details(cls, job) -> JobRow:
        def when(ms: int | None) -> datetime | None:
            return datetime.fromtimestamp(ms / 1000, UTC) if ms else None

        return cls(job.submission_id or job.job_id or "?", str(job.status),
                   (job.metadata or {}).get(METADATA_KEY, ""), when(job.start_time),
                   when(job.end_time), (job.message or "").strip())


def status(cluster: Cluster, job_id: str | None = None) -> list[JobRow]:
    """The job `job_id` (one row), or every job didray submitted to the cluster, oldest first."""
    client = cluster.client
    with cluster_errors(cluster.url, job_id):
        if job_id:
            return [JobRow.from_details(client.get_job_info(job_id))]
        jobs = [j for j in client.list_jobs() if METADATA_KEY in (j.metadata or {})]
    return sorted((JobRow.from_details(j) for j in jobs),
                  key=lambda r: r.start or datetime.min.replace(tzinfo=UTC))


def format_status(rows: list[JobRow]) -> str:
    """A plain table: job, status, sweep, started (UTC), duration, message."""
    def duration(r: JobRow) -> str:
        if r.start is None:
            return ""
        seconds = int(((r.end or datetime.now(UTC)) - r.start).total_seconds())
        return f"{seconds // 60}m{seconds % 60:02d}s"

    table = [("job", "status", "sweep", "started (UTC)", "time", "message")]
    table += [(r.job_id, r.status, r.sweep, r.start.strftime("%Y-%m-%d %H:%M:%S")
               if r.start else "", duration(r), r.message[:70]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)


def logs(cluster: Cluster, job_id: str, follow: bool = False) -> Iterator[str]:
    """The job's driver output: all of it so far (one chunk), or (`follow`) chunks as they
    arrive until the job ends (the Jobs API's websocket, `tail_job_logs`). Connection and
    unknown-job errors are raised here, before iterating."""
    client = cluster.client
    with cluster_errors(cluster.url, job_id):
        client.get_job_info(job_id)  # an unknown job fails here, with a plain message
        if not follow:
            return iter([client.get_job_logs(job_id)])
    return _tail(cluster, job_id)


def _tail(cluster: Cluster, job_id: str) -> Iterator[str]:
    """`tail_job_logs` is an async generator; drive it from a private event loop."""
    chunks = cluster.client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            with cluster_errors(cluster.url, job_id), warnings.catch_warnings():
                # Ray's tail_job_logs passes aiohttp the deprecated ssl=None; not ours to fix.
                warnings.filterwarnings("ignore", "ssl=None is deprecated", DeprecationWarning)
                try:
                    chunk = loop.run_until_complete(anext(chunks))
                except StopAsyncIteration:
                    return
            yield chunk
    finally:
        loop.run_until_complete(chunks.aclose())
        loop.close()


def stop(cluster: Cluster, job_id: str) -> bool:
    """Ask the cluster to stop the job; False if it had already ended."""
    with cluster_errors(cluster.url, job_id):
        return cluster.client.stop_job(job_id)
