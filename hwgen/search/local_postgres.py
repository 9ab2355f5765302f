"""A throwaway local PostgreSQL server, for trying `hwgen search --storage postgresql://...` on one
machine (tests, benchmarks) before pointing workers of many machines at a real server.

initdb into a temporary folder, pg_ctl start on a free TCP port (and a socket in that folder), stop
and delete on exit. PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
user. Needs the server binaries (Debian `postgresql`).
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: client slots: every search worker holds a pooled connection plus its heartbeat thread's
MAX_CONNECTIONS = 200


def server_binary(name: str) -> str | None:
    """`initdb` / `pg_ctl` on PATH, else in Debian's versioned folder (not on PATH by default)."""
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def available() -> bool:
    return bool(server_binary("initdb") and server_binary("pg_ctl"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def temporary_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL (postgresql+psycopg2://USER@127.0.0.1:PORT/postgres) of a fresh server."""
    initdb, pg_ctl = server_binary("initdb"), server_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="hwgen_pg_"))
    data = root / "data"
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o755)
    port = _free_port()
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections={MAX_CONNECTIONS}"
    init = [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", user]
    start = [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]
    try:
        if as_root and not os.stat("/dev/null").st_mode & 0o002:
            # some containers ship /dev/null without write permission for other users, which initdb and
            # the server need: give them a writable sink in a private mount namespace
            sink = root / "null"
            sink.touch(mode=0o666)
            os.chmod(sink, 0o666)
            script = f"mount --bind {shlex.quote(str(sink))} /dev/null && {shlex.join(init)} && {shlex.join(start)}"
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
            subprocess.run(cmd, check=True, capture_output=True, cwd=root)
        else:
            subprocess.run(init, check=True, capture_output=True, cwd=root)
            subprocess.run(start, check=True, capture_output=True, cwd=root)
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/postgres"
    finally:
        if data.exists():
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)
