"""
A private, throwaway PostgreSQL cluster for tests that stop or crash a server.

It has its own data directory (under /tmp), its own port on 127.0.0.1 and its
own unix socket directory, so restarting it never touches the shared service
on 127.0.0.1:5432. ``fsync=off`` for speed: committed data survives a stop,
an immediate stop or a SIGKILL of the server, not a crash of the machine.
(``synchronous_commit`` stays on: off, a SIGKILL loses the last commits.)

Run as root, ``initdb``/``pg_ctl`` run as the ``postgres`` user (initdb refuses
root), and the cluster directory is handed to that user.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from helpers import free_port

PG_USER = "postgres"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "100",
    "max_wal_size": "256MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
    "autovacuum": "off",
}


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path | None:
    """
    The directory of the newest PostgreSQL server binaries, or None.
    """
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
    for bindir in reversed(candidates):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and (Path(out) / "initdb").is_file() and (Path(out) / "pg_ctl").is_file():
            return Path(out)
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).parent
    return None


def available() -> str | None:
    """
    None when a private cluster can be started here, else the reason why not.
    """
    bindir = find_bindir()
    if bindir is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) found"
    missing = [name for name in ("postgres", "pg_isready") if not (bindir / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing from {bindir}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no {PG_USER!r} user to run initdb as"
    return None


def _private_dir(prefix: str) -> Path:
    """A new 0700 directory under /tmp, owned by the postgres user when we are root."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


class PostgresCluster:
    """
    A PostgreSQL cluster of its own: ``start()``, ``stop()``, ``restart()``,
    ``kill()``, then ``cleanup()`` (or use it as a context manager).

    The data directory is created by the first ``start()`` and kept across
    restarts, as is the port, so :attr:`url` stays valid.
    """

    def __init__(self) -> None:
        reason = available()
        if reason is not None:
            raise RuntimeError(f"cannot run a PostgreSQL cluster: {reason}")
        bindir = find_bindir()
        assert bindir is not None
        self.bindir = bindir
        self.port = free_port()
        self.dir = _private_dir("perfkit-pg-")
        self.datadir = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self._initialized = False

    # -- public API ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``postgres`` database as user ``postgres``."""
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """
        Start the server (creating the cluster on first use) and wait until it
        accepts connections.
        """
        if not self._initialized:
            self._initdb()
        try:
            self._pg_ctl(
                "start",
                "-w",
                "-t",
                str(int(_START_TIMEOUT)),
                "-l",
                str(self.logfile),
                timeout=_START_TIMEOUT + 10,
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- server log tail ---\n{self.log_tail()}") from exc
        deadline = time.monotonic() + _START_TIMEOUT
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on port {self.port} started but is not ready\n"
                    f"--- server log tail ---\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """
        Stop the server (``smart``, ``fast`` or ``immediate``) and wait until
        it is down. Does nothing when it is not running.
        """
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if not self.is_running():
            return
        try:
            self._pg_ctl(
                "stop", "-m", mode, "-w", "-t", str(int(_STOP_TIMEOUT)), timeout=_STOP_TIMEOUT + 10
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- server log tail ---\n{self.log_tail()}") from exc

    def restart(self, mode: str = "fast") -> None:
        """Stop the server with *mode*, then start it again; both waited for."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """
        Crash the server: SIGKILL the postmaster, wait for it and its backends
        to be gone. The next ``start()`` runs crash recovery.
        """
        pid = self.postmaster_pid()
        if pid is None or not _alive(pid):
            return
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + _STOP_TIMEOUT
        # Backends exit on their own when they see the postmaster die; the old
        # shared memory stays "in use" until they have, blocking a new start.
        while any(_alive(p) for p in [pid, *children]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes still alive after SIGKILL of {pid}")
            time.sleep(0.02)
        # The dead postmaster may linger as a zombie until PID 1 reaps it, and a
        # new one refuses lock files naming a pid that still exists: drop them.
        (self.datadir / "postmaster.pid").unlink(missing_ok=True)
        (self.dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def is_ready(self) -> bool:
        """True when the server accepts connections on its TCP port."""
        try:
            result = subprocess.run(
                [
                    str(self.bindir / "pg_isready"),
                    *("-q", "-h", "127.0.0.1", "-p", str(self.port)),
                    *("-d", "postgres", "-U", PG_USER, "-t", "2"),
                ],
                capture_output=True,
                timeout=5,
                check=False,
                env=self._env(),
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def is_running(self) -> bool:
        """True while a postmaster owns the data directory."""
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, or None."""
        try:
            first = (self.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def log_tail(self, lines: int = 40) -> str:
        """The last *lines* of the server log."""
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError as exc:
            return f"(no server log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        """Stop the server at once (if running) and remove its directory."""
        try:
            if self.is_running():
                try:
                    self.stop("immediate")
                except RuntimeError:
                    self.kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"PostgresCluster(port={self.port}, dir={str(self.dir)!r})"

    # -- internals ----------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env.pop("LANG", None)
        return env

    def _run(self, args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a server tool, as the postgres user when we are root."""
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        try:
            result = subprocess.run(
                args,
                cwd=self.dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{Path(args[0]).name} timed out after {timeout} s") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise RuntimeError(
                f"{Path(args[0]).name} {' '.join(args[1:2])} failed "
                f"(exit {result.returncode}): {output}"
            )
        return result

    def _pg_ctl(self, action: str, *args: str, timeout: float) -> None:
        self._run(
            [str(self.bindir / "pg_ctl"), action, "-D", str(self.datadir), *args], timeout=timeout
        )

    def _initdb(self) -> None:
        """Create the data directory: a copy of this process's initdb template."""
        template = _template_datadir(self.bindir)
        self._run(["cp", "-a", str(template), str(self.datadir)], timeout=60)
        settings = {
            **_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
        }
        conf = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write("\n# perfkit test cluster\n" + conf)
        self._initialized = True


_templates: dict[Path, Path] = {}


def _template_datadir(bindir: Path) -> Path:
    """
    A pristine initdb data directory, made once per process (initdb takes
    about 2 s, a copy a tenth of that) and removed at exit.
    """
    if bindir not in _templates:
        holder = PostgresCluster.__new__(PostgresCluster)
        holder.bindir = bindir
        holder.dir = _private_dir("perfkit-pg-template-")
        atexit.register(shutil.rmtree, holder.dir, ignore_errors=True)
        datadir = holder.dir / "data"
        holder._run(
            [
                str(bindir / "initdb"),
                *("-D", str(datadir), "-U", PG_USER, "-A", "trust"),
                *("-E", "UTF8", "--no-locale", "--no-sync"),
            ],
            timeout=120,
        )
        _templates[bindir] = datadir
    return _templates[bindir]
