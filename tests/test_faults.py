"""Real faults during real searches, no mocks: a diverging trial, a killed trial worker, a
driver killed with SIGKILL, an MLflow server that goes away mid-search, a cluster node that dies.

Each test runs ``python -m search`` in a subprocess on a tiny space written to tmp_path
(256-512 Fashion-MNIST images, 2-3 epochs, 2-3 trials), causes the fault from outside the
way it happens for real (SIGKILL, a dead server, a dead raylet), and then reads what
MLflow holds. Processes are found through this test's own files and process tree, never
by name, so other Ray clusters on the machine are left alone.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import psutil
import pytest
from conftest import tiny_space_yaml
from mlflow.tracking import MlflowClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)

pytestmark = pytest.mark.slow

MIXUP = {"mixup_alpha": {"type": "uniform", "low": 0.0, "high": 1.0}}


def write_space(tmp_path, question, params=MIXUP, samples=2, epochs=2, train_subset=512, **sections):
    # No early stopping: each fault test controls which trial fails and when.
    path = tmp_path / "faults.yaml"
    path.write_text(tiny_space_yaml(question, params, samples=samples, epochs=epochs, train_subset=train_subset,
                                    grace_period=epochs, scheduler="none", **sections))
    return path


def start_search(space, tmp_path, tracking_uri, *extra, env=None):
    env = {**os.environ, **(env or {}), "MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if v is not None}  # None: unset for the search
    log = open(tmp_path / "search.log", "w")
    return subprocess.Popen([sys.executable, "-m", "search", str(space), "--storage", str(tmp_path / "ray"), *extra],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc, tmp_path, timeout=420) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return (tmp_path / "search.log").read_text()


def sqlite_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def runs(tracking_uri):
    """(client, parent run, {trial_id: run}); fails if a trial has two runs."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("tricktune/faults")
    all_runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in all_runs if r.data.tags.get("tricktune_role") == "search"]
    trials = [r for r in all_runs if "trial_id" in r.data.tags]
    by_id = {r.data.tags["trial_id"]: r for r in trials}
    assert len(by_id) == len(trials), "a trial was recorded as more than one MLflow run"
    return client, parent, by_id


def epochs_logged(client, run, metric="val_top1"):
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))


def trial_results(tmp_path) -> dict:
    """{trial_id: [result dicts]} from Ray's result.json files (complete once the search has ended)."""
    out = {}
    for path in glob.glob(str(tmp_path / "ray" / "*" / "run_trial_*" / "result.json")):
        with open(path) as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
        if lines:
            out[lines[0]["trial_id"]] = lines
    return out


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``."""
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended already
        os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, proc=None, step=0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search exited (rc {proc.returncode}) before {what}")
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def trial_workers(root_pid: int) -> dict[str, int]:
    """{trial folder name: pid} of the Ray trial processes below ``root_pid``. Ray runs each
    trial in a working folder named like the trial's results folder, so /proc/<pid>/cwd says
    which trial a process trains."""
    found = {}
    for pid in descendants(root_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                title = fh.read()
            cwd = os.path.basename(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if title.startswith(b"ray::") and cwd.startswith("run_trial_"):
            found[cwd] = pid
    return found


def between_checkpoints(tmp_path, workers: dict[str, int]):
    """(trial_id, pid) of a running trial that has saved its epoch-2 checkpoint and not epoch 3's.

    The checkpoint folders are written by the trial itself before it reports, so they are
    current (Ray's result.json is copied from the driver only every 10 s or more). Killing
    after the second checkpoint means there is a checkpoint Ray has surely registered (epoch
    1's) whatever the timing, so the retry resumes instead of starting over."""
    for name, pid in workers.items():
        trial_dir = glob.glob(str(tmp_path / "ray" / "*" / name))
        if trial_dir and os.path.isdir(os.path.join(trial_dir[0], "checkpoint_000001")) \
                and not os.path.isdir(os.path.join(trial_dir[0], "checkpoint_000002")):
            return name.split("_")[2], pid
    return None


def resumed(tmp_path, trial_id, dead_pids) -> dict:
    """The first result the trial reported after its worker died."""
    after = [r for r in trial_results(tmp_path)[trial_id] if r["pid"] not in dead_pids]
    assert after, "the trial never reported again"
    return after[0]


# --- a trial whose loss becomes NaN ---------------------------------------------------------------

def test_diverging_trial_stops_itself_and_is_recorded_failed(tmp_path):
    # lr 1e10 makes the loss NaN within the first epoch (1e6 only reaches ~1e27 there on this
    # data); the baseline (lr 0.05) runs first, TPE (seed 0) draws both values for the rest.
    space = write_space(tmp_path, "does a diverging trial stop itself?", samples=3, epochs=2, train_subset=256,
                        params={"lr": {"type": "choice", "values": [0.05, 1.0e10]}},
                        fixed={"weight_decay": 0.0, "schedule": "constant"}, baseline={"lr": 0.05})
    proc = start_search(space, tmp_path, sqlite_uri(tmp_path))
    output = finish(proc, tmp_path)
    assert proc.returncode == 0, output[-3000:]

    client, parent, trials = runs(sqlite_uri(tmp_path))
    diverged = [r for r in trials.values() if float(r.data.params["lr"]) > 1]
    healthy = [r for r in trials.values() if float(r.data.params["lr"]) < 1]
    assert len(trials) == 3 and diverged and healthy, {t: r.data.params["lr"] for t, r in trials.items()}
    results = trial_results(tmp_path)
    for run in diverged:
        tags = run.data.tags
        assert run.info.status == "FAILED" and tags["outcome"] == "nonfinite_loss"
        assert tags["epochs_run"] == "1" and tags["failed_epoch"] == "1"
        assert "at epoch 1" in tags["failure"] and "lower lr" in tags["failure"]
        assert run.data.metrics["nonfinite_loss"] == 1.0
        assert epochs_logged(client, run) == [1]
        # It stopped itself once: one result, no retry (retrying a NaN reproduces it).
        assert len(results[tags["trial_id"]]) == 1 and "retries" not in tags
    for run in healthy:
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
        assert epochs_logged(client, run) == [1, 2]
    assert parent.info.status == "FINISHED"
    assert float(trials[parent.data.tags["best_trial"]].data.params["lr"]) == 0.05


# --- a trial's worker process is killed (what the OOM killer does) --------------------------------

@pytest.mark.parametrize("max_failures", [2, 0], ids=["retried", "no_retries"])
def test_killed_trial_worker(tmp_path, max_failures):
    space = write_space(tmp_path, "does a trial survive its worker being killed?", samples=2, epochs=3)
    proc = start_search(space, tmp_path, sqlite_uri(tmp_path), "--max-failures", str(max_failures))
    try:
        trial_id, pid = wait_for(lambda: between_checkpoints(tmp_path, trial_workers(proc.pid)), 300,
                                 "a trial's second epoch", proc)
        kill(pid)
    finally:
        output = finish(proc, tmp_path)
    assert proc.returncode == 0, output[-3000:]

    client, parent, trials = runs(sqlite_uri(tmp_path))
    assert len(trials) == 2 and parent.info.status == "FINISHED"
    killed = trials[trial_id]
    (other,) = [r for t, r in trials.items() if t != trial_id]
    assert other.info.status == "FINISHED" and other.data.tags["outcome"] == "completed"
    if max_failures:
        # Retried in a new worker from a checkpoint: one run, each epoch logged once.
        assert killed.info.status == "FINISHED" and killed.data.tags["outcome"] == "completed"
        assert killed.data.tags["retries"] == "1" and "died" in killed.data.tags["last_error"]
        for metric in ("val_top1", "train_loss"):
            assert epochs_logged(client, killed, metric) == [1, 2, 3]
        first = resumed(tmp_path, trial_id, {pid})
        assert first["epoch"] >= 2 and first["iterations_since_restore"] == 1, "the retry started over"
    else:
        assert killed.info.status == "FAILED" and killed.data.tags["outcome"] == "error"
        assert "died" in killed.data.tags["error"] and killed.data.tags["epochs_run"] == "2"
        assert epochs_logged(client, killed) == [1, 2]
        assert "1 failed" in output


# --- the driver is SIGKILLed (no handler runs), then resumed -------------------------------------

def _finished_and_running(uri) -> bool:
    try:
        _, _, trials = runs(uri)
    except Exception:  # noqa: BLE001 - the store or experiment is not there yet
        return False
    return any(r.info.status == "FINISHED" for r in trials.values()) and any(
        r.info.status == "RUNNING" and "val_top1" in r.data.metrics for r in trials.values())


def test_a_driver_killed_with_sigkill_resumes_with_nothing_lost(tmp_path):
    """kill -9 of the search's own process once a trial has finished and another is mid-run:
    no signal handler closes anything, so MLflow is left with RUNNING runs. RESUME then records
    every trial of the budget once, to the end, with no epoch twice, and no run stays RUNNING:
    a trial the dead driver had started but Ray had not yet saved is run again under a new
    id, and its old run is closed as interrupted (seen: it stayed RUNNING forever before)."""
    space = write_space(tmp_path, "does a killed driver lose records?", samples=4, epochs=4)
    uri = sqlite_uri(tmp_path)
    proc = start_search(space, tmp_path, uri)
    wait_for(lambda: _finished_and_running(uri), 300, "a finished trial and a running one", proc, step=0.5)
    below = descendants(proc.pid)
    kill(proc.pid)
    proc.wait()
    _, parent, trials = runs(uri)
    assert parent.info.status == "RUNNING" and "RUNNING" in {r.info.status for r in trials.values()}
    try:
        resumed = subprocess.run([sys.executable, "-m", "search", str(space), "--storage", str(tmp_path / "ray"),
                                  "--resume"], cwd=ROOT, env={**os.environ, "MLFLOW_TRACKING_URI": uri,
                                                               "OMP_NUM_THREADS": "1"},
                                 capture_output=True, text=True, timeout=600)
    finally:
        for pid in below:  # Ray processes the dead driver started, if any outlived it
            kill(pid)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    client, parent, trials = runs(uri)  # fails if a trial was recorded twice
    assert parent.info.status == "FINISHED" and "RUNNING" not in {r.info.status for r in trials.values()}
    done = [r for r in trials.values() if r.data.tags.get("outcome") == "completed"]
    assert len(done) == 4  # the budget, each trial once
    for run in done:
        assert run.info.status == "FINISHED" and epochs_logged(client, run) == [1, 2, 3, 4]  # none twice
    for run in trials.values():
        assert run in done or (run.info.status, run.data.tags.get("outcome")) == ("KILLED", "interrupted")


# --- the MLflow server goes away mid-search ----------------------------------------------------------

def _mlflow_server(tmp_path, port):
    log = open(tmp_path / "mlflow_server.log", "a")
    return subprocess.Popen([os.path.join(BIN, "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path}/srv.db", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc):
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _answers(url):
    try:
        MlflowClient(url).search_experiments(max_results=1)
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _has_epoch(url):
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("tricktune/faults")
    return exp is not None and any("val_top1" in r.data.metrics for r in client.search_runs([exp.experiment_id]))


def test_mlflow_outage_mid_search_loses_nothing(tmp_path, monkeypatch):
    """The server is killed after the first epoch is recorded and stays down past the end of
    the search: training goes on, the search exits 0, what MLflow did not take is spooled to
    mlflow_pending.jsonl, and `python -m search.tracking import` sends all of it later."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this test's own polling: fail fast
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    space = write_space(tmp_path, "does an MLflow outage lose records?", samples=2, epochs=3, train_subset=256)
    server = _mlflow_server(tmp_path, port)
    proc = None
    try:
        wait_for(lambda: _answers(url), 180, "the MLflow server", server, step=1)
        proc = start_search(space, tmp_path, url, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": None})  # CLI default
        wait_for(lambda: _has_epoch(url), 300, "the first epoch in MLflow", proc, step=1)
        _stop(server)
        output = finish(proc, tmp_path)
        assert proc.returncode == 0, output[-3000:]
        assert "MLflow unreachable" in output and "search.tracking import" in output
        assert "best single run" in output  # the summary still prints
        (pending,) = glob.glob(str(tmp_path / "ray" / "*" / "mlflow_pending.jsonl"))

        server = _mlflow_server(tmp_path, port)  # back on the same port and store
        wait_for(lambda: _answers(url), 180, "the restarted MLflow server", server, step=1)
        sent = subprocess.run([sys.executable, "-m", "search.tracking", "import", pending], cwd=tmp_path,
                              env={**os.environ, "MLFLOW_TRACKING_URI": url}, capture_output=True, text=True,
                              timeout=120)
        assert sent.returncode == 0 and "sent" in sent.stdout, sent.stderr[-2000:]
        assert not os.path.exists(pending) and os.path.exists(pending + ".sent")

        client, parent, trials = runs(url)
        assert len(trials) == 2
        for run in trials.values():
            assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
            for metric in ("val_top1", "train_loss", "lr"):
                assert epochs_logged(client, run, metric) == [1, 2, 3], (metric, run.data.tags["trial_id"])
        assert parent.info.status == "FINISHED" and parent.data.tags["state"] == "finished"
        assert {"best_val_top1", "baseline_val_top1", "delta_vs_baseline"} <= set(parent.data.metrics)
        assert parent.data.tags["best_trial"] in trials
        assert "best_checkpoint" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        _stop(server)


# --- a two-node Ray cluster loses a node ------------------------------------------------------------

def test_two_node_cluster_survives_losing_a_node(tmp_path):
    """Head + worker node on this machine, storage both reach; the worker node dies (its raylet and
    every process of it, SIGKILL) while a trial runs there; the trial resumes on the head."""
    # Ray 2.60 turns token auth on for `ray start --head` when ~/.ray/auth_token exists, but not for
    # `ray start --address` or the driver, which then fail with "InvalidAuthToken ... RAY_AUTH_MODE
    # is currently 'disabled'". One explicit token for all three (and nothing read from ~/.ray).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="tt-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    node_args = ["--block", "--num-cpus", "1", "--object-store-memory", str(100 * 1024 * 1024),
                 "--temp-dir", temp_dir, "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    ray = os.path.join(BIN, "ray")
    nodes = []

    def start_node(name, *args):
        log = open(tmp_path / f"{name}.log", "w")
        nodes.append(subprocess.Popen([ray, "start", *args, "--dashboard-agent-listen-port", str(free_port()),
                                       *node_args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        return nodes[-1]

    def alive_nodes():
        status = subprocess.run([ray, "status", "--address", f"127.0.0.1:{port}"], env=env,
                                capture_output=True, text=True, timeout=60)
        return status.stdout.split("Pending:")[0].count("node_")

    proc = None
    try:
        start_node("head", "--head", "--port", str(port), "--include-dashboard", "false",
                   "--ray-client-server-port", str(free_port()))
        wait_for(lambda: alive_nodes() == 1, 180, "the head node", nodes[0], step=2)
        worker = start_node("worker", "--address", f"127.0.0.1:{port}")
        wait_for(lambda: alive_nodes() == 2, 180, "the worker node", worker, step=2)

        space = write_space(tmp_path, "does a search survive losing a node?", samples=2, epochs=3)
        proc = start_search(space, tmp_path, sqlite_uri(tmp_path), "--max-failures", "2",
                            env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"})
        trial_id, pid = wait_for(lambda: between_checkpoints(tmp_path, trial_workers(worker.pid)), 300,
                                 "a trial's second epoch on the worker node", proc)
        doomed = descendants(worker.pid)
        os.killpg(worker.pid, signal.SIGKILL)  # ray start, raylet, agents (one process group) ...
        for p in doomed:  # ... and the trial workers, which Ray puts in groups of their own
            kill(p)
        output = finish(proc, tmp_path, timeout=480)
        assert proc.returncode == 0, output[-3000:]

        client, parent, trials = runs(sqlite_uri(tmp_path))
        assert len(trials) == 2 and parent.info.status == "FINISHED"
        for run in trials.values():  # every trial once, every epoch once
            assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
            assert epochs_logged(client, run) == [1, 2, 3]
        assert trials[trial_id].data.tags["retries"] == "1"
        first = resumed(tmp_path, trial_id, doomed | {pid})  # on the head, from a checkpoint
        assert first["epoch"] >= 2 and first["iterations_since_restore"] == 1, "the retry started over"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        # Only this test's cluster: its process groups and everything below them. (`ray stop
        # --force` would also stop every other Ray on the machine.)
        for node in nodes:
            below = descendants(node.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            for p in below:
                kill(p)
            node.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
