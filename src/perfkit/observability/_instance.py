"""
Metrics of the whole instance: every worker's counters in one scrape of any of them.

Each worker keeps counting in its own memory (nothing changes on the hot path) and writes a
snapshot of its Prometheus registry to a directory the instance's workers share: once a
second, at exit, and when another worker asks. A scrape asks every live worker for a fresh
snapshot (a datagram on its socket; it answers within milliseconds), then adds them up:
counters and histograms are summed; gauges are kept per worker (label ``worker``). A worker
holds a lock on its own file for as long as it lives, so a dead one (even killed) is seen
at once: its counters and histograms are folded into one archive file and its files
deleted. Counters never go back when a worker restarts, and dead workers leave nothing
behind but their sums.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

__all__ = ["InstanceMetrics", "worker_resource"]

log = logging.getLogger("perfkit.observability")

_INTERVAL: Final = 1.0
_ASK_TIMEOUT: Final = 0.5
_ARCHIVE: Final = "archive.json"
_SUMMED: Final = frozenset({"counter", "histogram", "summary", "gaugehistogram"})

# One sample: (sample name, labels as sorted pairs) -> value.
_Key = tuple[str, tuple[tuple[str, str], ...]]
# One family: name -> (type, documentation, unit, samples).
_Families = dict[str, tuple[str, str, str, dict[_Key, float]]]


def _default_directory(name: str) -> Path:
    # Workers of one process manager (gunicorn's arbiter, uvicorn's supervisor) share a parent.
    return Path(tempfile.gettempdir()) / f"perfkit-metrics-{name}-{os.getppid()}"


class _Worker:
    """This process's presence in one directory: its id, its held lock, its socket, its thread.

    One per process and directory, whatever number of :class:`InstanceMetrics` use it, so the
    process's counters (one registry) are never counted twice; its lock is held until the
    process dies, which is how the others know it is alive.
    """

    def __init__(self, directory: Path, interval: float) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self.id = f"{self.pid}-{secrets.token_hex(3)}"
        directory.mkdir(parents=True, exist_ok=True)
        self.lock_file = (directory / f"{self.id}.lock").open("wb")
        fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(directory / f"{self.id}.sock"))
        self.socket.settimeout(interval)
        self.users = 0
        self.lock = threading.Lock()  # one snapshot at a time: never an older one last
        self.thread: threading.Thread | None = None
        self.write: Any = None  # the snapshot function of the first user

    def serve(self) -> None:
        while self.users:
            try:
                message, sender = self.socket.recvfrom(64)
            except TimeoutError:
                message, sender = b"", None
            except OSError:
                return
            if message == b"stop" or not self.users:
                return
            try:
                self.write()
            except Exception:  # a failing collector must not end the thread
                log.exception("could not write this worker's metrics snapshot")
            if sender:
                with contextlib.suppress(OSError):
                    self.socket.sendto(b"done", sender)


_workers: dict[Path, _Worker] = {}
_workers_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child is not its parent's worker: close what it inherited (the parent keeps
    its lock) and start afresh if it starts metrics of its own."""
    for worker in list(_workers.values()):
        worker.socket.close()
        worker.lock_file.close()
    _workers.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _close_at_exit() -> None:
    """Let go of this process's sockets and locks (the process is dead to the others now)."""
    for worker in list(_workers.values()):
        if worker.pid == os.getpid():
            worker.socket.close()
            worker.lock_file.close()


def _worker(directory: Path, interval: float) -> _Worker:
    with _workers_lock:
        found = _workers.get(directory)
        if found is None or found.pid != os.getpid():  # none yet, or the parent's (a fork)
            found = _workers[directory] = _Worker(directory, interval)
        return found


class InstanceMetrics:
    """
    One Prometheus exposition of every worker of this instance.

    Start one in each worker (in the app's lifespan, after any fork) and serve
    :meth:`exposition` at ``/metrics``: whichever worker the scrape reaches answers for all
    of them. Workers find each other through a directory: ``directory=``, else
    ``PERFKIT_METRICS_DIR``, else one named after *name* and the parent process (the
    process manager), so the workers of one ``gunicorn`` or ``uvicorn --workers`` share it
    with nothing configured. A process counts once per directory, however many of these it
    starts (the snapshot is of one registry).

    Args:
        name: The service (part of the default directory's name).
        directory: Where the workers' snapshots are.
        registry: The ``prometheus_client`` registry to snapshot (default: the global one).
        interval: Seconds between snapshots when nobody asks.

    Example::

        metrics = InstanceMetrics("tickets")
        metrics.start()
        ...
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        name: str = "app",
        *,
        directory: str | os.PathLike[str] | None = None,
        registry: Any = None,
        interval: float = _INTERVAL,
    ) -> None:
        if interval <= 0:
            msg = f"interval must be more than 0 s, not {interval!r}"
            raise ValueError(msg)
        configured = directory or os.environ.get("PERFKIT_METRICS_DIR")
        self.directory = Path(configured) if configured else _default_directory(name)
        self._registry = registry
        self._interval = interval
        self._me: _Worker | None = None

    @property
    def worker(self) -> str:
        """This process's id in the directory (after :meth:`start`)."""
        if self._me is None or self._me.pid != os.getpid():
            msg = "start() it first (in this process)"
            raise RuntimeError(msg)
        return self._me.id

    def start(self) -> None:
        """Join the directory (once per process) and keep this worker's snapshot fresh."""
        if self._me is not None and self._me.pid == os.getpid():
            return  # started (a child of a fork starts again: the parent's is not its own)
        me = self._me = _worker(self.directory, self._interval)
        with _workers_lock:
            me.users += 1
            if me.write is None:
                me.write = functools.partial(self._write, me)
            self.snapshot()
            if me.thread is None or not me.thread.is_alive():
                me.thread = threading.Thread(
                    target=me.serve, name="perfkit-instance-metrics", daemon=True
                )
                me.thread.start()

    def stop(self) -> None:
        """Write a last snapshot; the last user stops the thread. The files stay: a process
        that dies leaves its sums to the archive."""
        me, self._me = self._me, None
        if me is None:
            return
        self._write(me)
        with _workers_lock:
            me.users -= 1
            last = me.users == 0
            thread = me.thread
            if last:
                me.write = None
        if last and thread is not None:
            with contextlib.suppress(OSError):
                me.socket.sendto(b"stop", str(self.directory / f"{me.id}.sock"))
            thread.join(timeout=5)

    def snapshot(self) -> None:
        """Write this worker's counters to its file, atomically."""
        if self._me is not None:
            self._write(self._me)

    def _write(self, me: _Worker) -> None:
        # Collect and replace under one lock: two writers interleaved could leave the older
        # collection in the file, and a counter would seem to go back.
        with me.lock:
            _write(self.directory / f"{me.id}.json", _families(_collect(self._registry)))

    # -- the scrape -------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every worker's metrics as one Prometheus text exposition."""
        from prometheus_client import generate_latest  # noqa: PLC0415

        me = self.worker  # raises before start()
        self.snapshot()
        live, dead = self._workers()
        self._ask(live)
        if dead:
            self._archive(dead)
        merged: _Families = {}
        # Read the archive and the files under a shared lock: a worker folded into the archive
        # by another scrape meanwhile would otherwise be counted twice, or not at all.
        with (self.directory / "archive.lock").open("wb") as guard:
            fcntl.flock(guard, fcntl.LOCK_SH)
            _add(merged, _read(self.directory / _ARCHIVE).get("families", {}), worker=None)
            for worker in [*live, me]:
                _add(merged, _read(self.directory / f"{worker}.json").get("families", {}), worker)
        return generate_latest(_Merged(merged))

    def _workers(self) -> tuple[list[str], list[str]]:
        """The other workers alive, and the dead ones (whose lock is free)."""
        live: list[str] = []
        dead: list[str] = []
        for path in self.directory.glob("*.json"):
            worker = path.stem
            if worker in (self.worker, "archive") or worker.startswith("."):
                continue
            (live if _alive(self.directory / f"{worker}.lock") else dead).append(worker)
        return live, dead

    def _ask(self, workers: list[str]) -> None:
        """Ask each live worker for a fresh snapshot; wait for their answers (bounded)."""
        if not workers:
            return
        reply = self.directory / f"ask-{secrets.token_hex(6)}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(reply))
            try:
                waiting = 0
                for worker in workers:
                    with contextlib.suppress(OSError):  # died, or not reading: its last file
                        # counts. Never block: a worker that stopped reading (a full queue)
                        # must not hold the scrape.
                        sock.sendto(
                            b"snap", socket.MSG_DONTWAIT, str(self.directory / f"{worker}.sock")
                        )
                        waiting += 1
                deadline = time.monotonic() + _ASK_TIMEOUT
                while waiting and (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    try:
                        sock.recv(64)
                    except TimeoutError:
                        break
                    waiting -= 1
            finally:
                reply.unlink(missing_ok=True)

    def _archive(self, dead: list[str]) -> None:
        """Fold dead workers' counters and histograms into the archive; delete their files."""
        with (self.directory / "archive.lock").open("wb") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            archive = _read(self.directory / _ARCHIVE)
            merged: _Families = {}
            _add(merged, archive.get("families", {}), worker=None)
            folded = set(archive.get("folded", []))
            for worker in dead:
                path = self.directory / f"{worker}.json"
                if worker not in folded and path.exists():
                    _add(merged, _read(path).get("families", {}), worker=None)
                    folded.add(worker)
            _write(self.directory / _ARCHIVE, _dump(merged), folded=sorted(folded))
            for worker in dead:
                for suffix in (".json", ".sock", ".lock"):
                    (self.directory / f"{worker}{suffix}").unlink(missing_ok=True)
            # Ids folded and deleted can go: the archive only needs to remember the files
            # that still exist (a crash between the write and the unlinks).
            remaining = {p.stem for p in self.directory.glob("*.json")}
            _write(
                self.directory / _ARCHIVE,
                _dump(merged),
                folded=sorted(folded & remaining),
            )


def _alive(lock: Path) -> bool:
    try:
        with lock.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
    return False


def _collect(registry: Any) -> Iterable[Any]:
    if registry is None:
        from prometheus_client import REGISTRY  # noqa: PLC0415

        registry = REGISTRY
    return list(registry.collect())


def _families(metrics: Iterable[Any]) -> dict[str, Any]:
    """A registry's metrics as JSON: name -> [type, doc, unit, [[sample, labels, value]]]."""
    out: dict[str, Any] = {}
    for metric in metrics:
        samples = [
            [s.name, sorted(s.labels.items()), s.value]
            for s in metric.samples
            if not s.name.endswith("_created")
        ]
        out[metric.name] = [metric.type, metric.documentation, metric.unit, samples]
    return out


def _add(merged: _Families, families: dict[str, Any], worker: str | None) -> None:
    """Add one snapshot's families to *merged*: sums, and gauges per *worker*."""
    for name, (kind, doc, unit, samples) in families.items():
        summed = kind in _SUMMED
        if not summed and worker is None:
            continue  # a dead worker's gauges mean nothing now
        family = merged.setdefault(name, (kind, doc, unit, {}))[3]
        for sample, labels, value in samples:
            pairs = tuple((str(k), str(v)) for k, v in labels)
            if summed:
                if "quantile" in dict(pairs):
                    continue  # quantiles do not add up
                key = (sample, pairs)
                family[key] = family.get(key, 0.0) + float(value)
            else:
                family[(sample, (*pairs, ("worker", worker)))] = float(value)  # type: ignore[arg-type]


def _dump(merged: _Families) -> dict[str, Any]:
    return {
        name: [kind, doc, unit, [[s, list(pairs), v] for (s, pairs), v in samples.items()]]
        for name, (kind, doc, unit, samples) in merged.items()
    }


def _write(path: Path, families: dict[str, Any], **extra: Any) -> None:
    # Unique per thread: the snapshot thread and a scrape may write the same file at once.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_text(json.dumps({"families": families, **extra}, separators=(",", ":")))
    os.replace(temporary, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


class _Merged:
    """A collector over merged families, for ``generate_latest``."""

    def __init__(self, families: _Families) -> None:
        self._families = families

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric  # noqa: PLC0415

        for name, (kind, doc, unit, samples) in sorted(self._families.items()):
            metric = Metric(name, doc, kind, unit)
            for (sample, pairs), value in sorted(samples.items()):
                metric.add_sample(sample, dict(pairs), value)
            yield metric


def worker_resource(service_name: str | None = None) -> Any:
    """
    An OpenTelemetry ``Resource`` for this worker: ``service.name`` (*service_name*, else
    ``OTEL_SERVICE_NAME``, else ``unknown_service``) and a ``service.instance.id`` of its own.

    Give it to the ``MeterProvider`` of each worker: an OTLP backend then keeps each
    worker's cumulative series apart, where without it several workers' counters land in
    one series and seem to go up and down. Needs the ``otel`` extra.

    Example::

        provider = MeterProvider(metric_readers=[reader], resource=worker_resource("tickets"))

    .. versionadded:: 0.2.0
    """
    import uuid  # noqa: PLC0415

    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - the otel extra

    attributes = {"service.instance.id": str(uuid.uuid4())}
    if service_name:
        attributes["service.name"] = service_name
    return Resource.create(attributes)
