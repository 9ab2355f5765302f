"""Workers sharing one study: kill -9 mid-trial loses no finished trial and the study resumes;
two workers on PostgreSQL split the trials of one study."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _worker(files: tuple[Path, Path], storage: str, study: str, trials: int, out: Path) -> subprocess.Popen:
    model, data = files
    cmd = [
        sys.executable,
        "-m",
        "hwgen.search",
        str(model),
        "--data",
        str(data),
        "--trials",
        str(trials),
        "--storage",
        storage,
        "--study",
        study,
        "-o",
        str(out),
        "--calib",
        "100",
        "--val",
        "300",
        "--grace",
        "2",
    ]
    out.mkdir(parents=True, exist_ok=True)
    # output to a file, not a pipe: a pipe nobody reads while the test polls fills up and stalls the worker
    with open(out / "worker.log", "a") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)


def _log(out: Path) -> str:
    path = out / "worker.log"
    return path.read_text()[-4000:] if path.is_file() else "(no output)"


_STORAGES: dict = {}


def _trials(storage: str, study: str) -> list:
    """The study's trials, read through one storage per URL: a storage per poll would open a new
    connection pool each time and exhaust the server's client slots while the test polls."""
    import optuna

    if storage not in _STORAGES:
        _STORAGES[storage] = optuna.storages.RDBStorage(storage)
    return optuna.load_study(study_name=study, storage=_STORAGES[storage]).get_trials(deepcopy=False)


def _kill_inside(w: subprocess.Popen, pred, timeout: float = 180.0) -> bool:
    """SIGKILL the worker at a moment `pred` holds: freeze it (SIGSTOP), look at the study, and kill
    it if the frozen state is the wanted one, else let it run on a little. Race-free: the worker
    cannot move on between the look and the kill. False if it finished or the time ran out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and w.poll() is None:
        time.sleep(random.uniform(0.005, 0.05))
        os.kill(w.pid, signal.SIGSTOP)
        try:
            if pred():
                os.kill(w.pid, signal.SIGKILL)
                return True
        finally:
            if w.poll() is None:
                os.kill(w.pid, signal.SIGCONT)
    return False


def _kill_and_resume(files: tuple[Path, Path], storage: str, out: Path) -> None:
    study = f"kill{os.getpid()}{time.monotonic_ns()}"

    def mid_trial() -> bool:
        try:
            ts = _trials(storage, study)
        except Exception:  # the study does not exist yet
            return False
        if not ts:
            return False
        last = ts[-1]  # running, with all 6 parameters chosen: inside the objective
        return (
            sum(t.state.name == "COMPLETE" for t in ts) >= 3 and last.state.name == "RUNNING" and len(last.params) == 6
        )

    w = _worker(files, storage, study, 200, out)
    try:
        killed_inside = _kill_inside(w, mid_trial)  # mid-trial: the last trial is RUNNING
    finally:
        if w.poll() is None:
            w.kill()
        w.wait()
    assert killed_inside, f"the worker never stood inside a trial's objective:\n{_log(out)}"
    ts = _trials(storage, study)
    running = [t.number for t in ts if t.state.name == "RUNNING" and len(t.params) == 6]
    assert running, [(t.number, t.state.name, len(t.params)) for t in ts]
    before = {t.number: (t.values, t.params) for t in _trials(storage, study) if t.state.name == "COMPLETE"}
    time.sleep(3)  # past the grace period: the killed trial's heartbeat is stale
    n = len(before) + 3
    w2 = _worker(files, storage, study, n, out)
    w2.wait(timeout=300)
    assert w2.returncode == 0, _log(out)
    after = _trials(storage, study)
    done = {t.number: (t.values, t.params) for t in after if t.state.name == "COMPLETE"}
    assert len(done) == n
    assert all(done[k] == v for k, v in before.items())  # finished trials intact
    killed = next(t for t in after if t.number == running[0])
    assert killed.state.name == "FAIL"
    retried = [t for t in after if t.system_attrs.get("failed_trial") == running[0]]
    assert retried and retried[0].params == killed.params


def test_kill_worker_mid_trial_sqlite(tiny_search_files: tuple[Path, Path], tmp_path: Path) -> None:
    _kill_and_resume(tiny_search_files, f"sqlite:///{tmp_path / 'study.db'}", tmp_path)


@pytest.mark.postgres
def test_kill_worker_mid_trial_postgres(
    tiny_search_files: tuple[Path, Path], postgres_url: str, tmp_path: Path
) -> None:
    _kill_and_resume(tiny_search_files, postgres_url, tmp_path)


@pytest.mark.postgres
def test_two_workers_share_one_study(tiny_search_files: tuple[Path, Path], postgres_url: str, tmp_path: Path) -> None:
    study = f"pair{os.getpid()}"
    ws = [_worker(tiny_search_files, postgres_url, study, 10, tmp_path / f"w{i}") for i in range(2)]
    for w in ws:
        w.wait(timeout=300)
    assert all(w.returncode == 0 for w in ws), [_log(tmp_path / f"w{i}") for i in range(2)]
    trials = _trials(postgres_url, study)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert 10 <= len(complete) <= 11  # a worker may finish the trial it started as the other reached 10
    assert len({t.datetime_start for t in complete}) == len(complete)
    assert all((tmp_path / f"w{i}" / "pareto.md").is_file() for i in range(2))
