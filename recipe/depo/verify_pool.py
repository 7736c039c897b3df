"""math-verify in child processes with a deadline and a memory cap.

Why processes: sympy parsing and simplification of some answers a policy writes (``(100!)!``,
``\\binom{1000000}{500000}``, a power tower) run for minutes and allocate gigabytes inside C
calls that hold the GIL. math-verify's own timeout is ``signal.alarm``, which exists only on a
process's main thread, and verl scores on executor threads; no in-process guard can interrupt a
C call that never returns to the interpreter. A child process can be killed from any thread at
any moment, and an address-space rlimit turns a runaway allocation into a MemoryError inside
the child instead of an OOM kill of the trainer.

Layout. Each scoring process starts one *template* child (``python -m recipe.depo.verify_pool``)
that imports sympy and math-verify once (seconds on a busy machine) and then only forks:
*workers* are forks of the template, ready in milliseconds with everything imported.
``VerifierPool.verify`` hands the two answers to an idle worker, waits for its verdict until
``timeout_s`` after the call began, and on a miss kills the worker (SIGKILL) and answers "not
equal" with the reason; the next call forks a fresh worker. So a burst of adversarial answers
costs one deadline each, not a Python start-up each.

The deadline counts from the call, waiting for a free worker included: with more concurrent
callers than workers, a call never waits out other calls' deadlines. The pool keeps ``workers``
idle between bursts and forks up to ``max_workers`` while callers queue, within a memory cap
(each worker may use ``memory_mb``; all of them together at most ``pool_memory_mb``). A call
that gets no worker before its deadline answers "not equal" with reason ``busy``. Only the
template's one-time start (imports, seconds) is outside the deadline: it is the environment's
cost, paid once per process before the first deadline starts.

Children are plain subprocesses and forks of our own template, never ``multiprocessing``, so the
pool behaves the same under fork, spawn, Ray actors, asyncio executors and threads; a process
forked from a pool's owner starts its own pool on first use. Requests and replies are single
JSON messages on Unix SOCK_SEQPACKET sockets. Workers and template exit on EOF, i.e. when the
owner goes away; a worker's CPU-time rlimit is raised per request only a few seconds past the
deadline, so one orphaned mid-request cannot spin on for long either.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass


def _env_number(name: str, default: float, kind: type) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a {kind.__name__}") from None
    if not value > 0:
        raise ValueError(f"environment variable {name}={raw!r} must be positive")
    return value


# Seconds math-verify may spend on one (answer, reference) pair before its worker is killed.
DEFAULT_TIMEOUT_S = _env_number("DEPO_REWARD_VERIFY_TIMEOUT_S", 1.0, float)
# Address-space cap per child; sympy needs ~100 MB, a runaway bigint hits this and fails cleanly.
DEFAULT_MEMORY_MB = _env_number("DEPO_REWARD_VERIFY_MEMORY_MB", 1024, int)
# Workers per scoring process kept between bursts (forks of the template: mostly shared pages).
DEFAULT_WORKERS = _env_number("DEPO_REWARD_VERIFY_WORKERS", 2, int)
# Workers a burst of concurrent calls may grow the pool to, so that a queued answer is checked
# instead of waiting behind others' deadlines; more than the cores buys little for answers that
# spin, but lets quick answers through beside them.
DEFAULT_MAX_WORKERS = _env_number("DEPO_REWARD_VERIFY_MAX_WORKERS", 8, int)


def _physical_memory_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        return 8192


# Sum of the workers' address-space caps: a quarter of the machine, so that even a burst of
# answers that each allocate up to the cap cannot push the trainer into the OOM killer.
DEFAULT_POOL_MEMORY_MB = _env_number("DEPO_REWARD_VERIFY_POOL_MEMORY_MB", max(1024, _physical_memory_mb() // 4), int)
# Importing sympy + math-verify takes ~1 s alone; a machine busy with rollouts can take far longer.
START_TIMEOUT_S = 120.0
# A fork of the already-imported template takes milliseconds; this only catches a wedged template.
FORK_TIMEOUT_S = 30.0

# Answers that ran for seconds to minutes in sympy, or grew past a GB, before the bound (issue
# #13): what the tests and benchmarks/reward_throughput.py hold the deadline against.
STALLING_ANSWERS = (
    "(100!)!",
    "\\binom{1000000}{500000}",
    "2^{ {2}^{ {2}^{ {2}^{5} } } }",
    "\\Gamma(1000000)",
    "(9999)!!",
    "\\int_0^1 x^{199}e^x dx",
    "((10^{150})^{150})^{150}",
    "9^{9^{9^{9}}}",
    "(x+1)^{999}",
    "10^{10^{10}}",
)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MAX_MESSAGE = 1 << 20


class VerifierUnavailable(RuntimeError):
    """The template could not be started or could not fork: an environment problem (math-verify
    missing, no memory or process slots), never something a model wrote. Raised so a run fails
    loudly instead of scoring every answer 0."""


@dataclass(frozen=True)
class Verdict:
    equal: bool
    # "verified" (math-verify decided), "timeout", "memory", "crashed" or "error:<ExceptionType>"
    reason: str


def _receive(sock: socket.socket, deadline: float) -> dict | None:
    """The next message, or None when the deadline passes first; EOFError when the peer is gone."""
    poller = select.poll()  # not select.select: Ray workers can hold fds above FD_SETSIZE
    poller.register(sock.fileno(), select.POLLIN)
    if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
        return None
    data = sock.recv(_MAX_MESSAGE)
    if not data:
        raise EOFError("verifier child closed its socket")
    return json.loads(data)


class _Worker:
    """One forked verifier; used by one thread at a time (the pool hands it out exclusively)."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        try:  # a pidfd cannot hit a recycled pid once the template has reaped this worker
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None
        self._next_id = 0

    def ask(self, pred: str, reference: str, timeout_s: float) -> dict | None:
        self._next_id += 1
        request = {"id": self._next_id, "pred": pred, "ref": reference, "timeout_s": timeout_s}
        deadline = time.monotonic() + timeout_s
        self.sock.sendall(json.dumps(request).encode())
        reply = _receive(self.sock, deadline)
        if reply is not None and reply.get("id") != self._next_id:
            raise ValueError(f"verifier reply {reply.get('id')} to request {self._next_id}")
        return reply

    def alive(self) -> bool:
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def kill(self) -> None:
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass  # already gone
        self.close()

    def close(self) -> None:
        self.sock.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class _Template:
    """The child that imports math-verify once and forks workers on request."""

    def __init__(self, memory_mb: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "recipe.depo.verify_pool"]
        command += ["--control-fd", str(theirs.fileno()), "--memory-mb", str(memory_mb)]
        try:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                env=env,
                pass_fds=(theirs.fileno(),),
                # out of the terminal's process group: a Ctrl-C reaches the owner, which then closes us
                start_new_session=True,
            )
        except OSError as exc:  # fork/exec failed: no memory or no process slots left
            ours.close()
            raise VerifierUnavailable(f"could not start the math-verify template process: {exc}") from None
        finally:
            theirs.close()
        self.sock = ours
        self.ready = False

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        try:
            message = _receive(self.sock, time.monotonic() + timeout_s)
        except (EOFError, OSError, ValueError) as exc:
            raise VerifierUnavailable(f"math-verify template exited while starting ({exc}); see its stderr") from None
        if message is None:
            raise VerifierUnavailable(f"math-verify template did not start within {timeout_s:.0f} s")
        if "error" in message:
            raise VerifierUnavailable(f"math-verify template could not start: {message['error']}")
        self.ready = True

    def fork_worker(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(self.sock, [b"fork"], [theirs.fileno()])
            reply = _receive(self.sock, time.monotonic() + FORK_TIMEOUT_S)
        except (EOFError, OSError, ValueError) as exc:
            ours.close()
            raise VerifierUnavailable(f"math-verify template is gone ({exc})") from None
        finally:
            theirs.close()
        if reply is None or "pid" not in reply:
            ours.close()
            raise VerifierUnavailable(f"math-verify template could not fork a worker: {reply}")
        return _Worker(ours, reply["pid"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, wait_s: float = 2.0) -> None:
        self.sock.close()  # EOF: the template exits by itself
        try:
            self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class VerifierPool:
    """Bounded concurrent verifications for every thread of one process: ``workers`` kept between
    bursts, up to ``max_workers`` while calls queue, as long as ``max_workers * memory_mb`` stays
    within ``pool_memory_mb`` (never fewer than ``workers``)."""

    def __init__(
        self,
        workers: int = DEFAULT_WORKERS,
        memory_mb: int = DEFAULT_MEMORY_MB,
        max_workers: int = DEFAULT_MAX_WORKERS,
        pool_memory_mb: int = DEFAULT_POOL_MEMORY_MB,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if memory_mb < 256:
            raise ValueError(f"memory_mb must be >= 256 (Python with sympy needs ~100 MB), got {memory_mb}")
        self.workers = workers
        self.memory_mb = memory_mb
        self.max_workers = burst_size(workers, memory_mb, max_workers, pool_memory_mb)
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy = 0
        self._waiting = 0
        self._template: _Template | None = None
        self._template_lock = threading.Lock()
        self.killed = 0  # workers killed at the deadline or found dead
        self.busy_misses = 0  # calls that found no worker before their deadline

    def verify(self, pred: str, reference: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
        """Whether math-verify finds ``pred`` equal to ``reference``, decided within ``timeout_s``
        of the call, waiting for a free worker included (reason ``busy`` when none came free in
        time). The template's one-time start precedes the deadline."""
        self.start()
        deadline = time.monotonic() + timeout_s
        worker = self._acquire(deadline)
        remaining = deadline - time.monotonic()
        if worker is None or remaining <= 0:
            if worker is not None:
                self._release(worker, reusable=True)
            with self._cond:
                self.busy_misses += 1
            return Verdict(False, "busy")
        reply = None
        try:
            reply = worker.ask(pred, reference, remaining)
        except (EOFError, OSError, ValueError):  # died (OOM killer, SIGKILL) or wrote garbage
            verdict = Verdict(False, "crashed")
        else:
            if reply is None:
                verdict = Verdict(False, "timeout")
            elif not isinstance(reply.get("equal"), bool):
                verdict = Verdict(False, "crashed")
            else:
                verdict = Verdict(reply["equal"], str(reply.get("reason", "verified")))
        # out of time, dead, or leaving after a MemoryError: never reused
        reusable = verdict.reason not in ("timeout", "crashed") and not reply.get("exit")
        if not reusable:
            worker.kill()
        self._release(worker, reusable, died=verdict.reason in ("timeout", "crashed"))
        return verdict

    def start(self) -> None:
        """Start the template (imports and warm-up, seconds) unless it already runs; verify calls
        this before its deadline begins. VerifierUnavailable when it cannot start."""
        template = self._template
        if template is not None and template.ready and template.alive():
            return
        with self._template_lock:
            self._ready_template()

    def _release(self, worker: _Worker, reusable: bool, died: bool = False) -> None:
        with self._cond:
            self._busy -= 1
            # a burst's extra workers are closed once nobody queues, so that idle memory stays at
            # `workers` processes
            if reusable and (self._waiting or len(self._idle) < self.workers):
                self._idle.append(worker)
            elif reusable:
                worker.close()  # EOF: it exits by itself
            elif died:
                self.killed += 1
            self._cond.notify()

    def _acquire(self, deadline: float) -> _Worker | None:
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    while self._idle:
                        worker = self._idle.pop()
                        if worker.alive():
                            self._busy += 1
                            return worker
                        worker.kill()
                        self.killed += 1
                    if self._busy < self.max_workers:
                        self._busy += 1  # claim the slot, fork outside the lock
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1
        worker = None
        try:
            worker = self._fork(deadline)
            return worker
        finally:
            if worker is None:  # out of time for the template lock, or the fork failed
                with self._cond:
                    self._busy -= 1
                    self._cond.notify()

    def _fork(self, deadline: float) -> _Worker | None:
        # forks take milliseconds each, but a burst queues them on the one template
        if not self._template_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return None
        try:
            return self._ready_template().fork_worker()
        except VerifierUnavailable:
            if self._template is not None:
                self._template.close(0)
                self._template = None
            raise
        finally:
            self._template_lock.release()

    def _ready_template(self) -> _Template:
        """The running, started template (caller holds ``_template_lock``)."""
        if self._template is not None and not self._template.alive():
            self._template.close(0)
            self._template = None
        if self._template is None:
            self._template = _Template(self.memory_mb)
        try:
            self._template.wait_ready(START_TIMEOUT_S)
        except VerifierUnavailable:
            self._template.close(0)
            self._template = None
            raise
        return self._template

    def child_pids(self) -> list[int]:
        """The template's and the idle workers' process ids (for tests and diagnostics)."""
        with self._cond:
            pids = [w.pid for w in self._idle]
        if self._template is not None:
            pids.append(self._template.proc.pid)
        return sorted(pids)

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()  # EOF: an idle worker exits by itself
        with self._template_lock:
            if self._template is not None:
                self._template.close()
                self._template = None

    def abandon(self) -> None:
        """In a forked copy of the owner: drop the owner's children without signalling them
        (they are the owner's), only closing our copies of their sockets so that EOF still
        reaches them when the owner exits."""
        for worker in self._idle:
            worker.sock.close()
        if self._template is not None:
            self._template.sock.close()
        self._idle, self._template = [], None
        self._busy = self._waiting = 0
        self._cond, self._template_lock = threading.Condition(), threading.Lock()


def burst_size(workers: int, memory_mb: int, max_workers: int, pool_memory_mb: int) -> int:
    """Workers a pool may run at once: ``max_workers`` cut to what ``pool_memory_mb`` holds at
    ``memory_mb`` each, never below the ``workers`` it keeps anyway."""
    return max(workers, min(max_workers, pool_memory_mb // memory_mb))


_pool: VerifierPool | None = None
_pool_lock = threading.Lock()


def shared_pool() -> VerifierPool:
    """This process's pool (created on first use, sized from the DEPO_REWARD_VERIFY_* variables)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = VerifierPool()
    return _pool


def _forget_pool_after_fork() -> None:
    global _pool, _pool_lock
    _pool_lock = threading.Lock()  # may have been held by another thread at fork time
    if _pool is not None:
        _pool.abandon()
    _pool = None


def _close_pool_at_exit() -> None:
    if _pool is not None:
        _pool.close()


os.register_at_fork(after_in_child=_forget_pool_after_fork)
atexit.register(_close_pool_at_exit)


# ---------------------------------------------------------------- the template and its workers


_WARM_UP = (
    ("\\frac{1}{2}", "0.5"),
    ("x^{2}+\\sqrt{2}", "\\sqrt{2}+x^2"),
    ("e^{x^2}", "e^{x^{2}}"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("[1,2)", "(1,2]"),
    ("(1,2)", "(1,2)"),
    ("x \\in (0,1)", "(0,1)"),
    ("x=3", "3"),
    ("50\\%", "50"),
    ("90^\\circ", "90"),
    ("2\\pi", "2 \\pi"),
    ("\\text{(C)}", "\\text{(C)}"),
    ("\\log_2 8", "3"),
    ("\\sin(x)", "\\sin x"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
)


def _send(sock: socket.socket, message: dict) -> None:
    try:
        sock.sendall(json.dumps(message).encode())
    except OSError:  # the owner is gone or gave up on us: nothing left to do
        os._exit(0)


def _template_main(control_fd: int, memory_mb: int) -> int:
    import logging
    import resource

    control = socket.socket(fileno=control_fd)
    os.dup2(2, 1)  # stray prints from libraries go to stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished workers
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # inherited by every worker
    try:
        from math_verify import parse, verify
        from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

        # math-verify warns on every call whose timeout is off; the owner enforces the deadline
        logging.getLogger("math_verify").setLevel(logging.CRITICAL)
        extraction = (LatexExtractionConfig(), ExprExtractionConfig())

        def equal(pred: str, reference: str) -> bool:
            # `$...$` rather than `\boxed{}`: with the box, math-verify does not strip `\%` units
            gold = parse(f"${reference.replace('$', '')}$", extraction, parsing_timeout=None, raise_on_error=True)
            guess = parse(f"${pred.replace('$', '')}$", extraction, parsing_timeout=None, raise_on_error=True)
            if not gold or not guess:
                return False
            return bool(verify(gold, guess, timeout_seconds=None, raise_on_error=True))

        # Load sympy's lazy modules and fill its caches on the answer shapes of the evaluation sets
        # before forking, so that a fresh worker's first check costs what later ones do.
        for pred, reference in _WARM_UP:
            equal(pred, reference)
    except BaseException as exc:
        _send(control, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _send(control, {"ready": True})

    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 64, 1)
        except OSError:
            return 0
        if not message:
            return 0  # the owner closed us
        if not fds:
            continue
        pid = os.fork()
        if pid == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _worker_main(socket.socket(fileno=fds[0]), equal)
            os._exit(0)
        os.close(fds[0])
        _send(control, {"pid": pid})


def _worker_main(sock: socket.socket, equal) -> None:
    import resource

    while True:
        try:
            data = sock.recv(_MAX_MESSAGE)
        except OSError:
            return
        if not data:
            return
        request = json.loads(data)
        # Backstop for an orphan: the owner kills us at its deadline, but if it died mid-request
        # nobody will, so the kernel does (SIGXCPU) a few seconds of CPU time past the deadline.
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(used.ru_utime + used.ru_stime + 4 * float(request.get("timeout_s", 1.0)) + 5)
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        leave = False
        try:
            result, reason = equal(request["pred"], request["ref"]), "verified"
        except MemoryError:
            result, reason, leave = False, "memory", True
        except RecursionError:
            result, reason = False, "error:RecursionError"
        except Exception as exc:  # noqa: BLE001 - failing to parse junk is a verdict, not a crash
            result, reason = False, f"error:{type(exc).__name__}"
        _send(sock, {"id": request["id"], "equal": bool(result), "reason": reason, "exit": leave})
        if leave:
            return


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="math-verify template of recipe.depo.verify_pool (not for direct use)")
    cli.add_argument("--control-fd", type=int, required=True)
    cli.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB)
    args = cli.parse_args()
    sys.exit(_template_main(args.control_fd, args.memory_mb))
