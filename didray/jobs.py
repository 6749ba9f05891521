"""Run sweeps on a remote Ray cluster through the Ray Jobs API.

`didray submit FILE --address http://HEAD:8265` validates the sweep file here, uploads the
working directory (the project source and its sweep files; never .venv, results, .git or
caches) and starts `python -m didray.cli run FILE` on the cluster's head node as a Ray job.
The job's driver imports didray from the uploaded directory, so the cluster needs only the
project's dependencies (cluster/ installs them), not this exact checkout.

The address is the Ray dashboard's URL (port 8265 by default), as for `ray job submit`; the
commands default to the RAY_ADDRESS environment variable. A bare `HOST:PORT` means
`http://HOST:PORT`.

Token authentication (Ray >= 2.52): when RAY_AUTH_MODE=token, requests carry the token that
Ray itself would use: RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else
~/.ray/auth_token (`ray get-auth-token` prints a cluster's token on its head node).
Unreachable dashboards and refused tokens raise `BadInput`, so the CLI exits 2 with one
paragraph saying what to check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from didray.errors import BadInput

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


def connect(address: str | None):
    """A `JobSubmissionClient` for `address`; it checks the connection on creation."""
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
            return JobSubmissionClient(url, headers=headers)
    except RuntimeError as err:  # e.g. "Version check returned 404": another HTTP server
        raise ClusterError(f"{url} answered, but not as a Ray dashboard with the Jobs API "
                           f"({err}). Check the address: it is the Ray dashboard's URL, "
                           "port 8265 unless --dashboard-port says otherwise") from None
    finally:
        os.environ.update(saved)


# ---------------------------------------------------------------- the API


def runtime_env(working_dir: Path, pip: list[str] | None = None) -> dict:
    """The job's runtime_env: the uploaded working directory, and pip packages if asked.

    No env_vars: the driver's own `ray.init(runtime_env=...)` sets didray's, and Ray refuses
    to merge a job's and a driver's runtime_env that both set the same variable."""
    env: dict = {"working_dir": str(working_dir), "excludes": list(EXCLUDES)}
    if pip:
        env["pip"] = list(pip)
    return env


def entrypoint(sweep_rel: str, storage: str | Path | None, resume: bool) -> str:
    """The shell command the job runs in the uploaded working directory."""
    args = ["python", "-m", "didray.cli", "run", sweep_rel]
    if storage is not None:
        args += ["--storage", str(storage)]
    if resume:
        args.append("--resume")
    return shlex.join(args)


def submit(sweep_file: str | Path, address: str | None, *, storage: str | Path | None = None,
           resume: bool = False, working_dir: str | Path = ".",
           pip: list[str] | None = None) -> str:
    """Validate `sweep_file`, upload `working_dir` and start the sweep as a Ray job.

    Returns the job's submission id. `storage` is a path on the cluster (shared storage for
    multi-node clusters; a relative one lands in the job's working directory on the head
    node). Nothing is uploaded when the sweep file is invalid or outside `working_dir`."""
    from didray.config.load import load_sweep

    sweep = load_sweep(sweep_file)  # raises BadInput subclasses listing every error
    root = Path(working_dir).resolve()
    path = Path(sweep_file).resolve()
    if not root.is_dir():
        raise ClusterError(f"working directory {working_dir} does not exist")
    if not path.is_relative_to(root):
        raise ClusterError(f"{sweep_file} is outside the working directory {root}, so the job "
                           "would not find it: move it there or pass --working-dir")
    rel = path.relative_to(root).as_posix()
    client = connect(address)
    url = dashboard_url(address)
    job_id = f"didray-{sweep.name}-{uuid.uuid4().hex[:8]}"
    with cluster_errors(url):
        return client.submit_job(
            entrypoint=entrypoint(rel, storage, resume),
            submission_id=job_id,
            runtime_env=runtime_env(root, pip),
            metadata={METADATA_KEY: sweep.name, "sweep_file": rel})


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


def status(address: str | None, job_id: str | None = None) -> list[JobRow]:
    """The job `job_id` (one row), or every job didray submitted to the cluster, oldest first."""
    client = connect(address)
    with cluster_errors(dashboard_url(address), job_id):
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


def logs(address: str | None, job_id: str, follow: bool = False) -> Iterator[str]:
    """The job's driver output: all of it so far (one chunk), or (`follow`) chunks as they
    arrive until the job ends (the Jobs API's websocket, `tail_job_logs`). Connection and
    unknown-job errors are raised here, before iterating."""
    client = connect(address)
    url = dashboard_url(address)
    with cluster_errors(url, job_id):
        client.get_job_info(job_id)  # an unknown job fails here, with a plain message
        if not follow:
            return iter([client.get_job_logs(job_id)])
    return _tail(client, url, job_id)


def _tail(client, url: str, job_id: str) -> Iterator[str]:
    """`tail_job_logs` is an async generator; drive it from a private event loop."""
    chunks = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            with cluster_errors(url, job_id), warnings.catch_warnings():
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


def stop(address: str | None, job_id: str) -> bool:
    """Ask the cluster to stop the job; False if it had already ended."""
    client = connect(address)
    with cluster_errors(dashboard_url(address), job_id):
        return client.stop_job(job_id)


# ---------------------------------------------------------------- the CLI


def cmd_submit(args: argparse.Namespace) -> int:
    from didray.config.load import load_sweep

    job_id = submit(args.file, args.address, storage=args.storage, resume=args.resume,
                    working_dir=args.working_dir, pip=args.pip)
    url = dashboard_url(args.address)
    storage = args.storage or load_sweep(args.file).storage
    if not Path(storage).is_absolute():
        print(f"didray: note: the results path {storage} is relative, so results land in the job's "
              "working directory on the head node; pass --storage with an absolute path "
              "(shared storage on a multi-node cluster) to keep them", file=sys.stderr)
    print(f"submitted {job_id}\n  status: didray status {job_id} --address {url}\n"
          f"  logs:   didray logs {job_id} --address {url} --follow\n"
          f"  watch:  {url} (Jobs, Train and Metrics views)")
    if args.follow:
        return follow_to_end(args.address, job_id)
    return 0


def follow_to_end(address: str | None, job_id: str) -> int:
    for chunk in logs(address, job_id, follow=True):
        print(chunk, end="", flush=True)
    final = status(address, job_id)[0]
    print(f"didray: job {job_id} {final.status}", file=sys.stderr)
    return 0 if final.status == "SUCCEEDED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    rows = status(args.address, args.job)
    if args.job:
        row = rows[0]
        print(f"{row.job_id}: {row.status}" + (f" ({row.message})" if row.message else ""))
    elif rows:
        print(format_status(rows))
    else:
        print(f"no didray jobs on {dashboard_url(args.address)}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if args.follow:
        return follow_to_end(args.address, args.job)
    for chunk in logs(args.address, args.job):
        print(chunk, end="")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    stopped = stop(args.address, args.job)
    print(f"{args.job}: " + ("stop requested" if stopped else "had already ended"))
    return 0


def add_job_commands(subparsers) -> None:
    """Register submit/status/logs/stop on the `didray` parser's subparsers object."""
    def address(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                            help="the Ray dashboard URL, e.g. http://HEAD:8265 "
                                 "(default: $RAY_ADDRESS)")

    p = subparsers.add_parser("submit", help="run a sweep on a Ray cluster as a Ray job")
    p.add_argument("file", help="sweep file, inside the working directory")
    address(p)
    p.add_argument("--storage", help="results path on the cluster (default: the sweep file's)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--working-dir", default=".", help="directory to upload (default: .)")
    p.add_argument("--pip", action="append", metavar="REQ",
                   help="pip requirement to install for the job (repeatable)")
    p.add_argument("--follow", action="store_true",
                   help="stream the job's logs and exit with its outcome")
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("status", help="status of one job, or a table of didray's jobs")
    p.add_argument("job", nargs="?", help="submission id (default: all didray jobs)")
    address(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("logs", help="print (or --follow) a job's driver output")
    p.add_argument("job")
    address(p)
    p.add_argument("--follow", action="store_true", help="stream until the job ends")
    p.set_defaults(func=cmd_logs)

    p = subparsers.add_parser("stop", help="stop a running job")
    p.add_argument("job")
    address(p)
    p.set_defaults(func=cmd_stop)
