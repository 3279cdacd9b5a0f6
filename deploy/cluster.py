"""
A local production cluster of the example API: M instances x N uvicorn workers behind haproxy
(health-checked on /readyz), on PostgreSQL + Redis, with the outbox relay and the webhook
worker as processes of their own on RabbitMQ. ``make cluster`` runs it until Ctrl-C.

    python deploy/cluster.py [--instances 2] [--workers 2] [--port 8080]

Each instance is what one host (or pod) would run: ``uvicorn --workers N`` with its own
metrics directory and ``PERFKIT_DRAIN_SECONDS`` set to the balancer's detection time, so a
restart of one instance (:meth:`Cluster.restart`) loses no request. The schema is migrated
once, before any worker starts (``perfkit db upgrade``), and seeded if empty.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HAPROXY_TEMPLATE = Path(__file__).with_name("haproxy.cfg")
DRAIN_SECONDS = 2.0  # > haproxy's detection: inter 500ms x fall 2
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/perfkit_cluster"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            msg = f"{what} did not come up within {timeout:g} s"
            raise RuntimeError(msg)
        time.sleep(0.1)


def _answers(port: int, path: str = "/readyz") -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclass
class Cluster:
    """The processes of one local cluster; :meth:`start` and :meth:`stop` them."""

    database_url: str
    redis_url: str | None = None
    amqp_url: str | None = None
    instances: int = 2
    workers: int = 2
    port: int = 0
    directory: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="perfkit-cluster-"))
    )
    ports: list[int] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    balancer: subprocess.Popen[bytes] | None = None

    def environment(self, instance: int) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "examples"),
               "PERFKIT_DATABASE_URL": self.database_url,
               "PERFKIT_DRAIN_SECONDS": str(DRAIN_SECONDS),
               "PERFKIT_METRICS_DIR": str(self.directory / f"metrics-{instance}")}  # fmt: skip
        for name, value in (("PERFKIT_REDIS_URL", self.redis_url),
                            ("PERFKIT_AMQP_URL", self.amqp_url)):  # fmt: skip
            if value:
                env[name] = value
            else:
                env.pop(name, None)
        return env

    def prepare(self) -> None:
        """Migrate once and seed if empty: what a deploy does before the workers start."""
        python = sys.executable
        subprocess.run([python, "-m", "perfkit", "db", "upgrade", self.database_url,
                        "--branch", "perfkit", "--branch", "perfkit_reference"],
                       check=True, env=self.environment(0))  # fmt: skip
        subprocess.run([python, "-c", "import sys; from bill_api.__main__ import seed_if_empty; "
                        "seed_if_empty(sys.argv[1])", self.database_url],
                       check=True, env=self.environment(0))  # fmt: skip

    def start_instance(self, instance: int, *, wait: bool = True) -> None:
        command = [sys.executable, "-m", "uvicorn", "bill_api.app:create_app", "--factory",
                   "--host", "127.0.0.1", "--port", str(self.ports[instance]),
                   "--workers", str(self.workers), "--ws", "none", "--log-level", "warning",
                   "--timeout-graceful-shutdown", "20"]  # fmt: skip
        self.servers[instance] = subprocess.Popen(command, env=self.environment(instance))
        if wait:
            self.wait_for(instance)

    def wait_for(self, instance: int) -> None:
        _wait_for(lambda: _answers(self.ports[instance]), f"instance {instance}")

    def stop_instance(self, instance: int) -> None:
        server = self.servers[instance]
        server.send_signal(signal.SIGTERM)  # drains: /readyz 503, then shuts down
        server.wait(timeout=60)

    def restart(self, instance: int) -> None:
        """Stop one instance (drained), start it again, wait until the balancer can use it."""
        self.stop_instance(instance)
        self.start_instance(instance)
        time.sleep(1.5)  # haproxy's rise 2 x inter 500ms: back in the rotation

    def start(self, *, prepare: bool = True) -> None:
        """Start everything (*prepare*: migrate and seed first, as a deploy would)."""
        if prepare:
            self.prepare()
        self.port = self.port or free_port()
        self.ports = [free_port() for _ in range(self.instances)]
        self.servers = [None] * self.instances  # type: ignore[list-item]
        for instance in range(self.instances):  # together, as a deploy starts them
            self.start_instance(instance, wait=False)
        for instance in range(self.instances):
            self.wait_for(instance)
        if self.amqp_url:
            for module in (["-m", "bill_api.relay"], ["-m", "dramatiq", "bill_api.worker"]):
                helper = subprocess.Popen([sys.executable, *module], env=self.environment(0))
                self.helpers.append(helper)
        config = self.directory / "haproxy.cfg"
        servers = "\n".join(
            f"    server i{n} 127.0.0.1:{port} check" for n, port in enumerate(self.ports)
        )
        config.write_text(
            HAPROXY_TEMPLATE.read_text()
            .replace("{port}", str(self.port))
            .replace("{servers}", servers)
        )
        self.balancer = subprocess.Popen(["haproxy", "-f", str(config), "-db"])
        _wait_for(lambda: _answers(self.port), "haproxy")

    def stop(self) -> None:
        for process in [self.balancer, *self.helpers, *self.servers]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [self.balancer, *self.helpers, *self.servers]:
            if process is not None:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def running(cluster: Cluster, *, prepare: bool = True) -> Iterator[Cluster]:
    try:
        cluster.start(prepare=prepare)
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--database", default=os.environ.get("PERFKIT_DATABASE_URL", DEFAULT_DATABASE)
    )
    parser.add_argument(
        "--redis", default=os.environ.get("PERFKIT_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--amqp", default=os.environ.get("PERFKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    options = parser.parse_args(argv)
    _create_database(options.database)
    cluster = Cluster(options.database, options.redis, options.amqp or None,
                      options.instances, options.workers, options.port)  # fmt: skip
    with running(cluster):
        print(f"perfkit cluster: http://127.0.0.1:{cluster.port} -> {options.instances} "
              f"instances x {options.workers} workers on {cluster.ports}; Ctrl-C stops it",
              flush=True)  # fmt: skip
        with suppress(KeyboardInterrupt):
            signal.pause()


def _create_database(url: str) -> None:
    """Create the cluster's PostgreSQL database if it does not exist."""
    import sqlalchemy as sa  # noqa: PLC0415

    target = sa.make_url(url)
    if not target.drivername.startswith("postgresql"):
        return
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": target.database}).first()  # fmt: skip
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


if __name__ == "__main__":
    main()
