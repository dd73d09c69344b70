"""``estkit serve --workers N``: a supervisor process and N forked workers on the same ports.

Each worker is a complete server (server/runner.py) with its own sockets bound with
SO_REUSEPORT, so the kernel spreads new connections over the workers; a worker creates its
TLS context, loads the CA keys and opens its store connections after the fork, so nothing
that is not fork-safe (SQLite connections, event loops, threads) is shared.

The supervisor, before forking:
- turns port 0 into concrete ports by binding (not listening) with SO_REUSEPORT, and holds
  those sockets until it exits: every worker, a replacement too, joins the same ports, and
  the plain-HTTP port written into certificates is the same in all of them;
- checks the TLS key and the anchors, creates the schema and loads or issues the OCSP responder
  certificates once, so a bad configuration is one error, not N, and the workers all load
  the same responder (renewal later is serialized by server/responder_lock.py).

The CRL refresh task runs in every worker: the store repeats the "is a CRL due?" check inside
the locked transaction that publishes, so N pollers still publish one CRL per event, and no
worker's death leaves the CRL without a refresher.

Then it prints the ready lines once every worker listens, replaces a worker that exits (after
a backoff that doubles while replacements keep dying young), and on SIGTERM or SIGINT stops
the workers with SIGTERM (graceful: they finish their requests) and exits. Each worker
watches a pipe from the supervisor and stops by itself if the supervisor is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType

from estkit.authority.anchor_crl import load_anchor_crls
from estkit.authority.ca import CertificateAuthority, load_pem_certificates
from estkit.authority.keys import KeyFileError, load_private_key
from estkit.config import Config, ServerSettings
from estkit.server import event_loop
from estkit.server.ocsp_renewal import responder_keepers
from estkit.server.runner import Listening, serve
from estkit.store import Store

log = logging.getLogger("estkit.supervisor")

POLL_SECONDS = 0.05
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
YOUNG_SECONDS = 10.0
"""A worker that dies sooner than this after its start counts as a crash loop: its
replacement waits twice as long as the previous one (up to BACKOFF_MAX)."""
STOP_GRACE_SECONDS = 30.0
"""How long workers get to finish after SIGTERM before the supervisor kills them."""


class StartupFailed(Exception):
    """A worker exited before it was serving: the instance did not start."""


@dataclass
class _Worker:
    index: int
    pid: int = 0
    ready_fd: int = -1
    """Read end of the pipe the worker writes one byte to once it listens."""
    lifeline_fd: int = -1
    """Write end of the pipe the worker watches: its end of file means "stop"."""
    started: float = 0.0
    ready: bool = False
    young_deaths: int = 0
    restart_at: float = 0.0


def default_workers() -> int:
    """One worker per CPU the process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _reserve_port(host: str, port: int, setting: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({exc.strerror}); free the port or change "
            f"[server] {setting}"
        ) from None
    return sock


def reserve_ports(settings: ServerSettings) -> tuple[ServerSettings, list[socket.socket]]:
    """The settings with concrete ports, and the bound (never listening) sockets holding them.
    A bound socket that does not listen receives no connections; it only keeps the ports."""
    http = _reserve_port(settings.host, settings.http_port, "http_port")
    try:
        https = _reserve_port(settings.host, settings.port, "port")
    except OSError:
        http.close()
        raise
    concrete = replace(settings, http_port=http.getsockname()[1], port=https.getsockname()[1])
    return concrete, [http, https]


def prepare(config: Config) -> None:
    """What runs once per instance before the workers start (see the module docstring)."""
    load_private_key(config.tls_key)
    anchors = {name: load_pem_certificates(path) for name, path in config.anchors.items()}
    load_anchor_crls(config.anchor_crls, anchors)
    store = Store(config.store_url, busy_timeout=config.store_busy_timeout)
    try:
        store.create_schema(f"estkit db upgrade --dir {config.path.parent}")
        ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
        for keeper in responder_keepers(config, ca, store):
            keeper.start()
    finally:
        store.close()  # never carry a store connection across fork


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    def __init__(self, config: Config, count: int, held: list[socket.socket]) -> None:
        self.config = config
        self.workers = [_Worker(index) for index in range(count)]
        self.held = held
        self.stop_signal: int | None = None

    # The worker side ---------------------------------------------------------------------

    def _child(self, worker: _Worker, ready_w: int, lifeline_r: int) -> int:
        """Runs in the forked worker; returns its exit status."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # the event loop installs its own
        for other in self.workers:
            for fd in (other.ready_fd, other.lifeline_fd):
                if fd >= 0:
                    os.close(fd)  # a sibling's lifeline must reach EOF when the parent dies
        for sock in self.held:
            sock.close()

        def ready(_: Listening) -> None:
            os.write(ready_w, b"r")
            os.close(ready_w)

        try:
            event_loop.run(serve(self.config, ready, reuse_port=True, lifeline=lifeline_r))
        except (KeyFileError, ValueError, OSError) as exc:
            print(f"estkit: error: worker {worker.index}: {exc}", file=sys.stderr, flush=True)
            return 1
        except Exception:
            log.exception("worker %d failed", worker.index)
            return 1
        return 0

    def _spawn(self, worker: _Worker) -> None:
        ready_r, ready_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            status = 1
            try:
                os.close(ready_r)
                os.close(lifeline_w)
                status = self._child(worker, ready_w, lifeline_r)
            finally:
                logging.shutdown()
                os._exit(status)
        os.close(ready_w)
        os.close(lifeline_r)
        os.set_blocking(ready_r, False)
        worker.pid, worker.ready_fd, worker.lifeline_fd = pid, ready_r, lifeline_w
        worker.started, worker.ready = time.monotonic(), False
        log.info("worker %d started (pid %d)", worker.index, pid)

    # The supervisor side -----------------------------------------------------------------

    @staticmethod
    def _close(worker: _Worker) -> None:
        for fd in (worker.ready_fd, worker.lifeline_fd):
            if fd >= 0:
                os.close(fd)
        worker.ready_fd = worker.lifeline_fd = -1

    def _poll_ready(self) -> None:
        for worker in self.workers:
            if worker.ready_fd < 0:
                continue
            try:
                data = os.read(worker.ready_fd, 1)
            except BlockingIOError:
                continue
            os.close(worker.ready_fd)
            worker.ready_fd = -1
            if data:
                worker.ready = True
                log.info("worker %d (pid %d) is serving", worker.index, worker.pid)

    def _reap(self, announced: bool) -> None:
        """Collect exited workers and schedule their replacements."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is None:
                continue
            self._poll_ready()
            self._close(worker)
            worker.pid = 0
            if not announced and not worker.ready and self.stop_signal is None:
                raise StartupFailed(
                    f"worker {worker.index} {_describe(status)} before it was serving"
                )
            now = time.monotonic()
            young = now - worker.started < YOUNG_SECONDS
            worker.young_deaths = worker.young_deaths + 1 if young else 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (worker.young_deaths - 1))
            worker.restart_at = now + delay
            if self.stop_signal is None:
                log.warning(
                    "worker %d (pid %d) %s; starting a new one in %.1fs",
                    worker.index,
                    pid,
                    _describe(status),
                    delay,
                )

    def _stop_all(self) -> None:
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(w.pid for w in self.workers):
            if time.monotonic() > deadline:
                for worker in self.workers:
                    if worker.pid:
                        log.warning("worker %d (pid %d) did not stop; killing it", *_ids(worker))
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker.pid, signal.SIGKILL)
                deadline = float("inf")
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(POLL_SECONDS)
                continue
            for worker in self.workers:
                if worker.pid == pid:
                    self._close(worker)
                    worker.pid = 0

    def run(self, on_ready: Callable[[Listening], None]) -> int:
        def on_signal(signum: int, _: FrameType | None) -> None:
            self.stop_signal = signum

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        announced = False
        try:
            for worker in self.workers:
                self._spawn(worker)
            while self.stop_signal is None:
                self._poll_ready()
                self._reap(announced)
                if not announced and all(w.ready for w in self.workers):
                    settings = self.config.server
                    host = _url_host(settings.host)
                    on_ready(
                        Listening(
                            f"https://{host}:{settings.port}",
                            f"http://{host}:{settings.http_port}",
                        )
                    )
                    announced = True
                now = time.monotonic()
                for worker in self.workers:
                    if not worker.pid and now >= worker.restart_at:
                        self._spawn(worker)
                time.sleep(POLL_SECONDS)
            log.info("stopping %d workers", len(self.workers))
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0


def _ids(worker: _Worker) -> tuple[int, int]:
    return worker.index, worker.pid


def run_workers(config: Config, count: int, on_ready: Callable[[Listening], None]) -> int:
    """Serve with ``count`` worker processes until SIGTERM or SIGINT; the exit status.
    StartupFailed if a worker exits before all are serving; KeyFileError, ValueError or
    OSError for a configuration the workers could not serve."""
    prepare(config)
    settings, held = reserve_ports(config.server)
    try:
        return Supervisor(replace(config, server=settings), count, held).run(on_ready)
    finally:
        for sock in held:
            sock.close()


__all__ = ["StartupFailed", "Supervisor", "default_workers", "prepare", "reserve_ports"]
