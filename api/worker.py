"""Job execution outside the event loop: one child process per running job, and a supervisor.

Why a fresh process per job (``python -m api.worker``, not a fork of the server):
inference is CPU-heavy and holds the GIL, a crash or an out-of-memory kill must not
take the server down, cancelling must be able to stop it, and the memory of a large
scene is returned when the job ends.

The supervisor (a thread of the server process) claims queued jobs up to the
configured concurrency, starts their processes, watches heartbeats, kills
cancelled or stuck jobs, and turns abnormal exits into bounded retries.
Children die with the server (``PR_SET_PDEATHSIG`` + parent check) so that after
a ``kill -9`` only the restarted server runs the requeued job.

Optionally (``GEOSEG_STANDBY=1``) a *standby* process is kept ready: started in
advance, it has already imported the runner (torch, the pipeline), loaded the shipped
models (the runner's ``warm``) and waits on stdin for its one job, so a lone request
pays neither; it is still one fresh process per job.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from rasterio.errors import RasterioIOError

from api.catalog import ModelCatalog, ModelUnavailable
from api.errors import describe, exception_chain
from api.jobs import Job, JobStore
from api.redact import name_upload, redact_paths
from api.runners import resolve_runner
from api.settings import Settings

log = logging.getLogger("geoseg.api.worker")

INPUT_NAME = "input.tif"
#: the option key under which a job's process hands its runner the upload's own file name
#: (``display_name``; not a client option, never stored): outputs name the input by it
INPUT_NAME_KEY = "_input_name"
RESULT_DIR = "result"
EXIT_RETRY = 1
EXIT_PERMANENT = 3
#: a tick failing the same way again is logged once in this many seconds
TICK_ERROR_LOG_EVERY_S = 60.0
#: most jobs one tick expires: retention switched on over a data dir of thousands of old jobs
#: removes them a batch a tick, never stalling the queue for minutes of rmtree
EXPIRE_PER_TICK = 100

# Exceptions that say "this input/option can never work": retrying would only waste time.
_PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, NotImplementedError)


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


def discard_scratch(settings: Settings, job_id: str) -> None:
    """Remove the ``attempt-N`` folders (partial outputs) of a job none of whose processes runs:
    only ``input.tif`` and ``result/`` are kept until the job is deleted."""
    for attempt in job_dir(settings, job_id).glob("attempt-*"):
        shutil.rmtree(attempt, ignore_errors=True)


def is_permanent(exc: BaseException, input_path: Path | None = None) -> bool:
    """An input or option error (retrying cannot help), or GDAL failing to read ``input_path``
    (a corrupt block: every retry decodes the same bytes)."""
    if isinstance(exc, _PERMANENT_ERRORS) or any("Unsupported" in cls.__name__ for cls in type(exc).__mro__):
        return True
    if input_path is None:
        return False
    chain = exception_chain(exc)
    return (any(isinstance(link, RasterioIOError) for link in chain)
            and any(input_path.name in str(link) for link in chain))


# --------------------------------------------------------------------------- child side
def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the server dies; no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:
        os._exit(EXIT_RETRY)


def _heartbeat(store: JobStore, job_id: str, attempt: int, every_s: float, parent_pid: int,
               stop: threading.Event) -> None:
    def beat() -> None:
        # a failed write (table locked past its timeout, disk full for a moment) must not end
        # the thread: the job would be killed as silent although it runs
        try:
            store.heartbeat(job_id, attempt)
        except Exception as exc:  # noqa: BLE001
            print(f"heartbeat of job {job_id} not recorded: {exc}", file=sys.stderr, flush=True)

    beat()  # alive now, before the runner's (slow) imports
    while not stop.wait(every_s):
        if os.getppid() != parent_pid:  # orphaned: the server is gone
            os._exit(EXIT_RETRY)
        beat()


def job_process_main(db_path: str, job_id: str, attempt: int, jdir: str, options: dict[str, Any],
                     runner: str, heartbeat_s: float, parent_pid: int) -> None:
    """Entry point of a job's process: run, publish results atomically, record the outcome."""
    _die_with_parent(parent_pid)
    store = JobStore(Path(db_path))
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(store, job_id, attempt, heartbeat_s, parent_pid, stop),
                     daemon=True).start()
    root = Path(jdir)
    work = root / f"attempt-{attempt}"
    last = {"t": 0.0, "stage": "", "fraction": 0.0}

    def progress(fraction: float, stage: str) -> None:
        """Throttled (2 writes/s) and never backwards, whatever order the stages report in."""
        now = time.monotonic()
        fraction = max(last["fraction"], min(1.0, float(fraction)))
        if stage != last["stage"] or now - last["t"] >= 0.5 or fraction >= 1.0:
            last.update(t=now, stage=stage, fraction=fraction)
            try:
                store.set_progress(job_id, attempt, fraction, stage)
            except Exception as exc:  # noqa: BLE001 - a lost progress write must not fail the job
                print(f"progress of job {job_id} not recorded: {exc}", file=sys.stderr, flush=True)

    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        report = resolve_runner(runner)(root / INPUT_NAME, work, options, progress)
        result = root / RESULT_DIR
        shutil.rmtree(result, ignore_errors=True)  # a previous attempt died after its rename
        os.replace(work, result)
        for stale in root.glob("attempt-*"):  # left by attempts killed mid-way
            shutil.rmtree(stale, ignore_errors=True)
        store.mark_succeeded(job_id, attempt, report if isinstance(report, dict) else {})
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the job table
        # The chained causes carry GDAL's reason; server paths are no business of the client.
        message = redact_paths(describe(exc), {root / INPUT_NAME: INPUT_NAME, root: "job"})
        message = name_upload(message, INPUT_NAME, options.get(INPUT_NAME_KEY) or INPUT_NAME)
        # each line names the job: several workers' tracebacks interleave in the server's log
        sys.stderr.write("".join(f"job {job_id} attempt {attempt}: {line}\n"
                                 for line in traceback.format_exc().splitlines()))
        store.note_error(job_id, attempt, message[:2000])
        shutil.rmtree(work, ignore_errors=True)
        stop.set()
        sys.stderr.flush()
        os._exit(EXIT_PERMANENT if is_permanent(exc, root / INPUT_NAME) else EXIT_RETRY)
    stop.set()


def standby_main(runner: str, parent_pid: int) -> None:
    """Preload the runner (and call its ``warm()`` if it has one), then wait for one job's
    arguments on stdin (EOF: retire)."""
    _die_with_parent(parent_pid)
    try:
        warm = getattr(resolve_runner(runner), "warm", None)
        if callable(warm):
            warm()  # e.g. load the models: the job then starts computing at once
    except Exception:  # noqa: BLE001 - the job itself will report the import error
        traceback.print_exc(file=sys.stderr)
    line = sys.stdin.readline()
    if not line.strip():
        return
    sys.stdin.close()
    job_process_main(**json.loads(line))


# --------------------------------------------------------------------------- server side
@dataclasses.dataclass
class _Running:
    job: Job
    process: subprocess.Popen
    killed_because: str | None = None
    permanent: bool = False  # killed for a reason a retry would meet again (its time limit)


class Supervisor:
    """Claims jobs, runs each in its own process, enforces retries, cancellation, heartbeats."""

    def __init__(self, settings: Settings, store: JobStore, runner: str,
                 catalog: ModelCatalog | None = None) -> None:
        self.settings = settings
        self.store = store
        self.runner = runner
        self.catalog = catalog if catalog is not None else ModelCatalog.load(None)
        self._running: dict[str, _Running] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: why the runner cannot be imported (``_probe_runner``), else None; set once it has been checked
        self.runner_error: str | None = None
        self.runner_checked = threading.Event()
        self._probe: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._standby: subprocess.Popen | None = None
        self._standby_deaths = 0
        self._tmp_dir = job_tmp_dir(settings)

    # lifecycle
    def start(self) -> None:
        self._replenish_standby()
        self._thread = threading.Thread(target=self._loop, name="geoseg-supervisor", daemon=True)
        self._thread.start()
        threading.Thread(target=self._probe_runner, name="geoseg-runner-probe", daemon=True).start()

    def _probe_runner(self) -> None:
        """Import the runner once in a child process, as each job's process does, and keep why it
        failed in ``runner_error`` (``/healthz`` then says degraded, until a job succeeds). Why: a
        runner that cannot be imported (torch without its libgomp, a broken install) failed every job
        three times while ``/healthz`` said ok; the server itself never imports it (torch stays out).
        Only an exit with an error counts: a probe killed (the OOM killer, ``stop``) says nothing."""
        probe = "import sys; from api.runners import resolve_runner; resolve_runner(sys.argv[1])"
        try:
            if self._stop.wait(RUNNER_PROBE_DELAY_S):  # stopped first: a server run for seconds needs no check
                return
            with self._lock:
                if self._stop.is_set():
                    return
                self._probe = subprocess.Popen(
                    [sys.executable, "-c", probe, self.runner], env=_child_env(self.settings.workers, self._tmp_dir),
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            _, stderr = self._probe.communicate(timeout=RUNNER_PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not check that the job runner %s imports: %s", self.runner, exc)
            if self._probe is not None:
                self._probe.kill()
                self._probe.communicate()  # reaped, its stderr pipe closed: no zombie for the server's life
            return
        finally:
            self.runner_checked.set()
        if self._probe.returncode > 0 and not self._stop.is_set():
            reason = redact_paths((stderr.strip().splitlines() or [f"exit code {self._probe.returncode}"])[-1])
            self.runner_error = f"the job runner {self.runner} does not import, so every job would fail: {reason}"
            log.error("%s", self.runner_error)

    def stop(self) -> None:
        """Graceful stop: kill running children and give their jobs back (attempt not counted)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if self._probe is not None and self._probe.poll() is None:  # it would outlive the server
                self._probe.kill()
            try:  # a process that ended before the stop (a job failed by its input, say) is settled as
                self._reap()  # such, not given back to the queue to fail again (or get a further try)
            except Exception:  # noqa: BLE001 - the table unusable now: recovered at the next start-up
                log.exception("could not record the end of jobs whose process had ended")
            for job_id, run in list(self._running.items()):
                run.process.kill()
                run.process.wait(timeout=5)
                self.store.release(job_id)
                discard_scratch(self.settings, job_id)  # its partial outputs go now, not when it next runs
            self._running.clear()
            if self._standby is not None:
                self._standby.kill()
                self._standby.wait(timeout=5)
                self._standby = None

    def wake(self) -> None:
        """Called after a job is queued or deleted, so it is picked up without waiting a poll."""
        self._wake.set()

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def standby_pid(self) -> int | None:
        return self._standby.pid if self._standby is not None else None

    def running_pids(self) -> dict[str, int]:
        return {job_id: run.process.pid for job_id, run in list(self._running.items())}

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        failing: str | None = None  # the error of the failing ticks, while they fail
        logged_at, hidden = 0.0, 0
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.tick()
                if failing is not None:
                    log.warning("supervisor ticks work again (%d failures not logged)", hidden)
                    failing, hidden = None, 0
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive any one bad tick
                # e.g. a full disk fails every tick (5 a second): one traceback a minute, not a
                # log that fills what is left of the disk
                text = f"{type(exc).__name__}: {exc}"
                if text != failing or time.monotonic() - logged_at >= TICK_ERROR_LOG_EVERY_S:
                    log.exception("supervisor tick failed%s",
                                  f" ({hidden} more failures not logged)" if hidden else "")
                    failing, logged_at, hidden = text, time.monotonic(), 0
                else:
                    hidden += 1
            self._wake.wait(self.settings.poll_s)
            self._wake.clear()

    # one pass
    def tick(self) -> None:
        self._reap()
        self._recover_lost()
        self._police()
        self._expire_ended()
        self._purge_deleted()
        self._launch()
        self._replenish_standby()

    def _reap(self) -> None:
        for job_id, run in list(self._running.items()):
            code = run.process.poll()
            if code is None:
                continue
            # Its process is gone, so its scratch goes first (a retry starts afresh, and a disk
            # filled by it is freed before the job table is asked anything). The job leaves
            # ``_running`` only once its outcome is recorded: if the table cannot be read or
            # written now (disk full, locked), the next tick settles it instead of forgetting it
            # and leaving it 'running' for ever.
            discard_scratch(self.settings, job_id)
            job = self.store.get(job_id, include_deleted=True)
            if job is not None and not job.deleted:
                if job.status == "succeeded":
                    log.info("job %s succeeded (attempt %d)", job_id, job.attempts)
                    self.runner_error = None  # the runner imports after all (the probe was wrong)
                elif job.status == "running":
                    self._settle(job, run.killed_because or job.last_error or _describe_exit(code),
                                 permanent=code == EXIT_PERMANENT or run.permanent)
            del self._running[job_id]

    def _settle(self, job: Job, error: str, permanent: bool = False) -> None:
        """A running job whose process is gone: fail it, or requeue it while attempts are left."""
        # a failure was logged only when retried: the server's log said nothing of failed jobs
        summary = error.splitlines()[0][:300] if error else "no reason recorded"
        if permanent:
            log.warning("job %s failed (attempt %d): %s", job.id, job.attempts, summary)
            self.store.mark_failed(job.id, error)
        elif job.attempts >= self.settings.max_attempts:
            log.error("job %s failed, gave up after %d attempts: %s", job.id, job.attempts, summary)
            self.store.mark_failed(job.id, f"{error} (gave up after {job.attempts} attempts)", retryable=True)
        else:
            log.warning("job %s attempt %d failed (%s); retrying", job.id, job.attempts, error)
            self.store.requeue(job.id, error)

    def _recover_lost(self) -> None:
        """Jobs the table says are running that no process of this server runs (a tick failed
        between claiming a job and starting its process, say): retried or failed, never left
        'running' for ever."""
        for job in self.store.running():
            if job.id in self._running or job.deleted:
                continue
            log.warning("job %s attempt %d has no worker process", job.id, job.attempts)
            discard_scratch(self.settings, job.id)
            self._settle(job, job.last_error or "its worker process was lost")

    def _police(self) -> None:
        now = time.time()
        for job_id, run in self._running.items():
            job = self.store.get(job_id, include_deleted=True)
            if job is None or job.deleted:
                run.killed_because = "cancelled"
                run.process.kill()
            elif job.heartbeat_at is not None and now - job.heartbeat_at > self.settings.stale_after_s:
                run.killed_because = (f"no heartbeat for {now - job.heartbeat_at:.0f} s "
                                      f"(stage {job.stage!r}); worker killed")
                run.process.kill()
            elif (self.settings.job_timeout_s and job.started_at is not None
                  and now - job.started_at > self.settings.job_timeout_s):
                # alive (heartbeat) but over its time: hung, or a scene too large for the limit;
                # a retry would take as long again, so the job fails
                run.killed_because = (f"timed out after {now - job.started_at:.0f} s (stage {job.stage!r},"
                                      f" progress {job.progress:.2f}); the limit is GEOSEG_JOB_TIMEOUT_S="
                                      f"{self.settings.job_timeout_s:g} s; worker killed")
                run.permanent = True
                run.process.kill()

    def _expire_ended(self) -> None:
        """Retention (``GEOSEG_RETENTION_HOURS``): jobs that ended more than that long ago are
        tombstoned like a DELETE, so ``_purge_deleted`` removes their files and row in this same
        tick. A download under way keeps its file open and completes (api.downloads)."""
        hours = self.settings.retention_hours
        if not hours:
            return
        expired = self.store.expire_ended(time.time() - hours * 3600.0, hours, EXPIRE_PER_TICK)
        if expired:
            log.info("%d job(s) ended over %g h ago expired (GEOSEG_RETENTION_HOURS)", len(expired), hours)

    def _purge_deleted(self) -> None:
        for job_id in self.store.deleted_ids():
            if job_id in self._running:
                continue
            shutil.rmtree(job_dir(self.settings, job_id), ignore_errors=True)
            self.store.purge(job_id)

    def _launch(self) -> None:
        while len(self._running) < self.settings.workers and not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                return
            try:
                # the cards of the models it names, loaded as `geoseg predict --model TASK=CARD` does
                model_dirs = self.catalog.card_paths(job.options.get("models") or {})
            except ModelUnavailable as exc:  # removed since the job was accepted: no retry helps
                log.warning("job %s: %s", job.id, exc)
                self.store.mark_failed(job.id, str(exc))
                continue
            options = {**job.options, INPUT_NAME_KEY: (job.input or {}).get("filename")}
            if model_dirs:
                options["model_dirs"] = model_dirs
            args = {"db_path": str(self.store.db_path), "job_id": job.id, "attempt": job.attempts,
                    "jdir": str(job_dir(self.settings, job.id)),
                    "options": options,
                    "runner": self.runner, "heartbeat_s": self.settings.heartbeat_s,
                    "parent_pid": os.getpid()}
            try:
                process = self._start_job(args)
            except Exception as exc:  # e.g. fork failed: _recover_lost retries it on the next tick
                self.store.note_error(job.id, job.attempts,
                                      f"could not start a worker process: {describe(exc)}")
                raise
            self._running[job.id] = _Running(job, process)
            log.info("job %s attempt %d started (pid %s)", job.id, job.attempts, process.pid)

    def _spawn(self, *args: str, stdin: int) -> subprocess.Popen:
        """A worker process in a session of its own: a Ctrl-C or ``kill -- -PGID`` meant for the server
        reached the workers too, each job ended as a crash and was retried with its attempt counted
        (three restarts failed it), instead of being given back by the server's graceful stop."""
        return subprocess.Popen([sys.executable, "-c", _WORKER_STUB, *args], stdin=stdin,
                                env=_child_env(self.settings.workers, self._tmp_dir), start_new_session=True)

    def _spawn_standby(self) -> subprocess.Popen:
        return self._spawn("--standby", self.runner, str(os.getpid()), stdin=subprocess.PIPE)

    def _start_job(self, args: dict[str, Any]) -> subprocess.Popen:
        """Hand the job to the warm standby if it is alive, else start a fresh process."""
        standby, self._standby = self._standby, None
        process = None
        if standby is not None and standby.poll() is None and standby.stdin is not None:
            try:
                standby.stdin.write((json.dumps(args) + "\n").encode())
                standby.stdin.close()
                process = standby
            except OSError:  # it died in between
                standby.kill()
        if process is None:
            process = self._spawn(json.dumps(args), stdin=subprocess.DEVNULL)
        return process

    def _replenish_standby(self) -> None:
        """Keep one standby once the launches of this tick are done (no churn with a backlog);
        give up after a few standbys that died on their own (e.g. the runner fails to import)."""
        if not self.settings.standby or self._stop.is_set():
            return
        if self._standby is not None and self._standby.poll() is not None:
            self._standby_deaths += 1
            log.warning("standby worker exited by itself (code %s)", self._standby.returncode)
            self._standby = None
        if self._standby is None and self._standby_deaths < 3:
            self._standby = self._spawn_standby()


def _child_env(workers: int, tmp_dir: Path | None = None) -> dict[str, str]:
    """The server's environment plus its import path (so injected runners import in the child),
    and a share of the CPU cores per job so concurrent jobs do not oversubscribe the machine
    (unless the operator set the thread variables); ``tmp_dir`` (``job_tmp_dir``) as ``TMPDIR``."""
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    if tmp_dir is not None:
        env["TMPDIR"] = str(tmp_dir)
    threads = str(max(1, usable_cpus() // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(name, threads)
    return env


def job_tmp_dir(settings: Settings) -> Path | None:
    """The temp folder of job processes: None (the system's) unless the operator set none (``TMPDIR``) and
    no system temp folder can be written (a read-only root file system without a ``/tmp`` volume, a
    Kubernetes default): then ``tmp/`` in the data dir, emptied here (what a killed job left).

    Why: there every job failed ("No usable temporary directory found": torch's imports need one),
    blamed on the client's input, while ``/healthz`` said ok."""
    if os.environ.get("TMPDIR"):
        return None
    try:
        with tempfile.TemporaryFile():
            return None
    except OSError:
        pass
    folder = settings.data_dir / "tmp"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    log.warning("no system temp folder can be written: job processes use %s (TMPDIR)", folder)
    return folder


#: what a worker process runs: ``python -m api.worker`` with SIGINT and SIGTERM ignored before its imports
#: (about 0.5 s, in which a stop signal sent to the whole service still ended the job as a crash)
_WORKER_STUB = ("import signal, runpy; [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)]; "
                "runpy.run_module('api.worker', run_name='__main__', alter_sys=True)")

#: seconds after start-up before the runner's import is checked: the first jobs (those a restart requeued) start
#: without it beside them, and a server started for a few seconds (a test) spends nothing on it
RUNNER_PROBE_DELAY_S = 5.0
#: seconds the start-up probe of the runner's import may take (torch: 3-10 s, more on a cold disk)
RUNNER_PROBE_TIMEOUT_S = 300


def _own_cgroup_v1_cpu(root: Path = Path("/sys/fs/cgroup/cpu"), proc: Path = Path("/proc/self/cgroup")) -> Path:
    """This process's folder of cgroup v1's cpu controller: ``root`` plus the path ``/proc/self/cgroup`` names
    for it (a systemd slice, a container's cgroup on a bare v1 node), where that folder exists; else ``root``
    (inside a container it is mounted there)."""
    try:
        for line in proc.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "cpu" in controllers.split(",") and (root / path.lstrip("/")).is_dir():
                return root / path.lstrip("/")
    except (OSError, ValueError):
        pass
    return root


def usable_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max"),
                cgroup_v1_cpu: Path | None = None) -> int:
    """The cores this process may use: its CPU affinity (``taskset``, a container's cpuset), bounded by
    a CPU quota (``docker --cpus``, a Kubernetes limit): cgroup v2's ``cpu.max``, else cgroup v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (older nodes: it was ignored there). ``os.cpu_count``
    counts the host's: on a big host each job took host cores / workers threads and was throttled."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
    except (OSError, ValueError):  # no cgroup v2 file, or one of another form: cgroup v1's, if any
        v1 = cgroup_v1_cpu if cgroup_v1_cpu is not None else _own_cgroup_v1_cpu()
        try:
            quota = (v1 / "cpu.cfs_quota_us").read_text().strip()
            period = (v1 / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return max(1, cores)
    try:
        if quota not in ("max", "-1"):  # no limit
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (ValueError, ZeroDivisionError):
        pass
    return max(1, cores)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGKILL": " (out of memory?)",
                # the pipeline's scratch files are memory-mapped: writing one on a full disk
                "SIGBUS": " (disk full? a memory-mapped scratch file could not be written)"}
        return f"worker killed by {name}" + hint.get(name, "")
    return f"worker exited with code {code}"


def _ignore_stop_signals() -> None:
    """A worker leaves stopping to its server, which gives its job back and then kills it (SIGKILL,
    or ``PR_SET_PDEATHSIG`` when the server dies). systemd's default stop (``KillMode=control-group``)
    sends SIGTERM to every process of the service at once: the worker died first, and its job was
    counted as a crashed attempt."""
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


if __name__ == "__main__":
    _ignore_stop_signals()
    if sys.argv[1] == "--standby":
        standby_main(sys.argv[2], int(sys.argv[3]))
    else:
        job_process_main(**json.loads(sys.argv[1]))
