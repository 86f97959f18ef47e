"""Private PostgreSQL clusters for tests that stop, restart or replicate a server: each has
its own data folder under a temporary directory and its own port on 127.0.0.1, never the
shared cluster the rest of the suite uses.

PostgreSQL refuses to run as root, so when the tests run as root the server programs run
as the `postgres` system user (runuser) and the folder is handed to it.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def available() -> bool:
    return (BIN / "initdb").exists()


@contextmanager
def private_root() -> Iterator[Path]:
    """A folder for clusters, removed afterwards. Not pytest's tmp_path: its parents are
    private to root, where the postgres user cannot reach."""
    root = Path(tempfile.mkdtemp(prefix="tracker-pg-"))
    try:
        yield root
    finally:
        for data in root.iterdir():
            if (data / "postmaster.pid").exists():
                subprocess.run([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
                               if os.geteuid() else
                               ["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D",
                                str(data), "-m", "immediate", "stop"],
                               capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _as_postgres(command: list[str], **options) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, check=True, capture_output=True, text=True, **options)


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


class Cluster:
    """One server: `start`, `stop` (fast or immediate), `restart`, `url(database)`."""

    def __init__(self, root: Path, name: str, port: int | None = None) -> None:
        self.root = root
        self.data = root / name
        self.port = port or free_port()
        self.log = root / f"{name}.log"

    # --- life --------------------------------------------------------------------------

    def init(self, **settings: str) -> "Cluster":
        """initdb (trust auth on 127.0.0.1), with `settings` added to postgresql.conf."""
        self.root.mkdir(parents=True, exist_ok=True)
        _give_to_postgres(self.root)
        _as_postgres([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                      "--auth=trust", "--no-sync", "-E", "UTF8"])  # fmt: skip
        self.configure(**settings)
        return self

    def configure(self, **settings: str) -> None:
        base = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",  # a test cluster: speed over crash safety of the host
            "max_connections": "60",
            "shared_buffers": "32MB",
        }
        lines = "".join(f"{k} = {v}\n" for k, v in (base | settings).items())
        conf = self.data / "postgresql.conf"
        conf.write_text(conf.read_text() + "\n# test settings\n" + lines)

    def start(self, timeout: float = 30) -> None:
        _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                      "-w", "-t", str(int(timeout)), "start"])  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: clean; `immediate`: as if it crashed)."""
        _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        result = subprocess.run([str(BIN / "pg_ctl"), "-D", str(self.data), "status"],
                                capture_output=True)  # fmt: skip
        return result.returncode == 0

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.data, ignore_errors=True)

    # --- use ---------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-Atc", sql],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    # --- replication -------------------------------------------------------------------

    def replica(self, name: str = "replica") -> "Cluster":
        """A streaming replica of this (running) server, started, on its own port.

        The primary must have been initialised with replication allowed (the defaults of
        PostgreSQL 15 are enough: wal_level replica, max_wal_senders 10, and trust auth
        for replication connections from 127.0.0.1 in pg_hba.conf by initdb)."""
        standby = Cluster(self.root, name)
        _as_postgres([str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", "postgres", "-D", str(standby.data), "-R", "-X", "stream",
                      "--no-sync", "--checkpoint=fast"])  # fmt: skip
        conf = standby.data / "postgresql.conf"
        # pg_basebackup copied the primary's port line: the replica's own comes after it.
        conf.write_text(conf.read_text() + f"\nport = {standby.port}\nhot_standby = on\n")
        standby.start()
        return standby

    def wait_until(self, check, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.data.name}: condition not met in {timeout} s")
            time.sleep(0.1)
