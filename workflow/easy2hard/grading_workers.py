"""Worker processes for the grader's symbolic checks, usable from any calling context.

Why plain subprocesses and not ``multiprocessing`` (or pebble on top of it): a ``spawn`` or
``forkserver`` child re-imports the caller's ``__main__`` before it runs anything. An unguarded
script is then re-executed in every worker (which fails, and its checks came back ``False``), and
code read from stdin cannot be re-imported at all (the worker dies; the parent used to wait
forever). ``fork`` avoids that but copies a process that may hold threads and locks (torch,
tokenizers, Jupyter). A worker here is ``python -m easy2hard.grading_workers``: a fresh interpreter
that imports only this package, so a guarded or unguarded script, ``python -``, ``python -c``, a
notebook kernel, a thread or a Snakemake ``run:`` block all get the same verdicts.

The protocol is one JSON line per request and per answer on the worker's stdin/stdout. The
worker says ``ready`` once sympy and math-verify are imported, so start-up time never counts
against a check's timeout. The parent enforces the timeout itself (``select`` on the pipe, then
``kill``): no ``signal``, so any thread may grade.

Outcomes: a verdict; ``CheckTimeout`` (the worker was killed: the caller decides what that means);
``WorkerFailure`` (the worker died, could not start, or answered nonsense: never a verdict).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
START_TIMEOUT = 120.0  # seconds for a worker to import sympy and math-verify (a loaded machine)


class CheckTimeout(Exception):
    """The check ran past its timeout; the worker was killed."""


class WorkerFailure(Exception):
    """The worker died, could not start, or broke the protocol: there is no verdict."""


class Worker:
    """One worker process. Not thread-safe: a pool hands it to one thread at a time."""

    def __init__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "easy2hard.grading_workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            close_fds=True,
            start_new_session=True,  # a Ctrl-C in the caller's terminal is the caller's
        )
        self._buffer = b""
        self._ready = False

    def check(self, pred: str, gold: str, timeout: float) -> bool:
        if not self._ready:
            if self._read_line(START_TIMEOUT) != {"ready": True}:
                raise WorkerFailure(f"the grading worker did not start{self._stderr_tail()}")
            self._ready = True
        try:
            self.process.stdin.write(json.dumps([pred, gold]).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerFailure(f"the grading worker is gone ({error}){self._stderr_tail()}") from None
        reply = self._read_line(timeout)
        if not isinstance(reply, dict) or not isinstance(reply.get("verdict"), bool):
            raise WorkerFailure(f"the grading worker answered {reply!r}{self._stderr_tail()}")
        return reply["verdict"]

    def _read_line(self, timeout: float):
        """The next JSON line; CheckTimeout (after killing) when none comes within `timeout`."""
        deadline = time.monotonic() + timeout
        stdout = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                self.kill()
                raise CheckTimeout
            chunk = os.read(stdout, 1 << 16)
            if not chunk:
                self.process.wait()
                raise WorkerFailure(
                    f"the grading worker exited with code {self.process.returncode}{self._stderr_tail()}"
                )
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return line.decode(errors="replace")

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        except (OSError, ValueError):
            tail = ""
        return f"; its stderr ends:\n{tail}" if tail else ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        try:
            self.process.stdin.close()  # the worker exits at end of input
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self.process.stdout.close()
        self._stderr.close()


class WorkerPool:
    """Up to `size` workers, started on demand and shared by every thread of this process."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._idle: list[Worker] = []
        self._started = 0
        self._changed = threading.Condition()
        self._closed = False
        self.pid = os.getpid()

    def acquire(self) -> Worker:
        with self._changed:
            while not self._idle and self._started >= self.size:
                self._changed.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return Worker()
        except BaseException:
            self._forget()
            raise

    def release(self, worker: Worker) -> None:
        """Back to the pool; a killed or dead worker (or any, once the pool is closed) is closed
        and its place freed."""
        with self._changed:
            if worker.alive and not self._closed:
                self._idle.append(worker)
                self._changed.notify()
                return
        worker.close()
        self._forget()

    def _forget(self) -> None:
        with self._changed:
            self._started -= 1
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


_lock = threading.Lock()
_pool: WorkerPool | None = None


def shared_pool(size: int | None = None) -> WorkerPool:
    """This process's pool (a forked child builds its own), resized when `size` changes."""
    global _pool
    with _lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = WorkerPool(size or default_size())
        elif size is not None and size != _pool.size:
            old, _pool = _pool, WorkerPool(size)
            old.close()  # workers still out with a thread are closed when it releases them
        return _pool


def default_size() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _after_fork_in_child() -> None:
    global _lock, _pool
    _lock = threading.Lock()  # a lock held by another parent thread at fork time stays held here
    _pool = None  # the parent's workers are the parent's


@atexit.register
def _close_pool() -> None:
    if _pool is not None and _pool.pid == os.getpid():
        _pool.close()


os.register_at_fork(after_in_child=_after_fork_in_child)


def serve() -> None:
    """The worker: answer one JSON line [pred, gold] with {"verdict": bool} until end of input."""
    from easy2hard import grading

    grading.preload_symbolic()
    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        pred, gold = json.loads(line)
        out.write(json.dumps({"verdict": bool(grading.symbolic_equivalent(pred, gold))}).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    serve()
