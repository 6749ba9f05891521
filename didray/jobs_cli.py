"""`didray submit|status|logs|stop`: the command handlers over didray.jobs' Ray Jobs client."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from didray.jobs import Cluster, connect, format_status, logs, prepare, status, stop, submit
from didray.storage import is_uri, refuse_credentials


def cmd_submit(args: argparse.Namespace) -> int:
    # Before connecting: bad input is reported as such.
    upload = prepare(args.file, args.working_dir, args.overrides)
    if args.storage:  # it is on the job's command line, which the dashboard shows
        refuse_credentials(args.storage)
    cluster = connect(args.address)
    job_id = submit(cluster, upload, storage=args.storage, resume=args.resume, pip=args.pip)
    url = cluster.url
    storage = args.storage or upload.sweep.storage
    if not is_uri(storage) and not Path(storage).is_absolute():
        print(f"didray: note: the results path {storage} is relative, so results land in the job's "
              "working directory on the head node; pass --storage with an absolute path "
              "(shared storage on a multi-node cluster) to keep them", file=sys.stderr)
    print(f"submitted {job_id}\n  status: didray status {job_id} --address {url}\n"
          f"  logs:   didray logs {job_id} --address {url} --follow\n"
          f"  watch:  {url} (Jobs, Train and Metrics views)")
    if args.follow:
        return follow_to_end(cluster, job_id)
    return 0


def follow_to_end(cluster: Cluster, job_id: str) -> int:
    for chunk in logs(cluster, job_id, follow=True):
        print(chunk, end="", flush=True)
    final = status(cluster, job_id)[0]
    print(f"didray: job {job_id} {final.status}", file=sys.stderr)
    return 0 if final.status == "SUCCEEDED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    cluster = connect(args.address)
    rows = status(cluster, args.job)
    if args.job:
        row = rows[0]
        print(f"{row.job_id}: {row.status}" + (f" ({row.message})" if row.message else ""))
    elif rows:
        print(format_status(rows))
    else:
        print(f"no didray jobs on {cluster.url}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    cluster = connect(args.address)
    if args.follow:
        return follow_to_end(cluster, args.job)
    for chunk in logs(cluster, args.job):
        print(chunk, end="")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    stopped = stop(connect(args.address), args.job)
    print(f"{args.job}: " + ("stop requested" if stopped else "had already ended"))
    return 0


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The `key.path=value ...` arguments of validate, run and submit."""
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help="set a field of the sweep file, e.g. train.lr=1e-4 "
                             "search.seed=[0,1] (values are YAML)")


def add_job_commands(subparsers) -> None:
    """Register submit/status/logs/stop on the `didray` parser's subparsers object."""
    def address(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                            help="the Ray dashboard URL, e.g. http://HEAD:8265 "
                                 "(default: $RAY_ADDRESS)")

    p = subparsers.add_parser("submit", help="run a sweep on a Ray cluster as a Ray job")
    p.add_argument("file", help="sweep file, inside the working directory")
    add_overrides(p)
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
