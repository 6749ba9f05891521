"""What a URI storage costs didray's own copies (docs/design.md §3.5): `Storage.push` and
`Storage.pull` of a cache-entry-shaped directory (a few large files and a seal written last)
against a moto S3 server on loopback, next to a plain local `shutil.copytree` of the same
files. Loopback has no network in the way: the table shows didray's copying, not S3's.

    python bench/storage.py [--sizes 1 16 128] [--repeats 3]

Needs `moto[server]` (the dev extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs

from didray.files import write_index
from didray.storage import Storage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def entry(root: Path, megabytes: int) -> Path:
    """A cache entry: four files of random bytes and its integrity index."""
    root.mkdir(parents=True)
    for i in range(4):
        (root / f"part-{i}.bin").write_bytes(os.urandom(megabytes * 2**20 // 4))
    write_index(root)
    return root


def timed(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 128], help="MB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    server = start_moto(port)
    work = Path(tempfile.mkdtemp(prefix="didray-bench-storage-"))
    os.environ["DIDRAY_MIRROR"] = str(work / "mirror")
    try:
        uri = f"s3://bench/store?endpoint_override=127.0.0.1:{port}&scheme=http"
        pyarrow.fs.FileSystem.from_uri(uri + "&allow_bucket_creation=true")[0].create_dir("bench")
        storage = Storage.of(uri)
        print("| entry (MB) | local copytree s | push s | push MB/s | pull s | pull MB/s |")
        print("|---|---|---|---|---|---|")
        for size in args.sizes:
            path = entry(storage.local / f"entry-{size}", size)
            local = timed(lambda p=path: (shutil.rmtree(work / "copy", ignore_errors=True),
                                          shutil.copytree(p, work / "copy")), args.repeats)
            push = timed(lambda p=path: storage.push(p), args.repeats)
            pull = timed(lambda p=path: (shutil.rmtree(p), storage.pull(p)), args.repeats)
            print(f"| {size} | {local:.3f} | {push:.3f} | {size / push:,.0f} | {pull:.3f} | "
                  f"{size / pull:,.0f} |")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
