"""A team's tracking server behind a sign-in: a real `mlflow server --app-name basic-auth`
(MLflow's own sign-in app) on a loopback port, and real searches against it.

Wrong or missing credentials fail in one line that names the variables to set, with exit
code 2, before Ray starts or anything is recorded; the right ones record the search.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
# The account the basic-auth app creates on its first start: MLflow 3.17 ships no default
# password (MLFLOW_AUTH_ADMIN_PASSWORD, at least 12 characters).
ADMIN = ("admin", "tricktune-test-admin")
SIGN_IN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@contextlib.contextmanager
def as_admin():
    """This process's MLflow client signed in as the server's admin (the test's own look)."""
    saved = {key: os.environ.get(key) for key in SIGN_IN}
    os.environ.update(zip(SIGN_IN, ADMIN))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signed_in(url: str) -> bool:
    try:
        with as_admin():
            MlflowClient(url).search_experiments(max_results=1)
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """The server as a team starts it, with its sign-in app; its users live in basic_auth.db
    in its working folder (the app's default configuration)."""
    root = tmp_path_factory.mktemp("auth-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(MLFLOW_FLASK_SERVER_SECRET_KEY="tricktune-test-only", MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(root / "server.log", "w")
    server = subprocess.Popen([os.path.join(BIN, "mlflow"), "server", "--app-name", "basic-auth",
                               "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                               "--artifacts-destination", str(root / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this test's own looks: fail fast, look again
        deadline = time.time() + 180
        while not signed_in(url):
            assert server.poll() is None and time.time() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


def search(tmp_path, url, credentials: dict):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_TRACKING_") and k != "MLFLOW_HTTP_REQUEST_MAX_RETRIES"}  # the CLI's own
    env.update(MLFLOW_TRACKING_URI=url, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **credentials)
    return subprocess.run([sys.executable, "-m", "search", "mixup_alpha", "--smoke", "--confirm-seeds", "0",
                           "--storage", str(tmp_path / "ray")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def experiments(url) -> list[str]:
    with as_admin():
        return [e.name for e in MlflowClient(url).search_experiments()]


@pytest.mark.slow
@pytest.mark.parametrize("credentials, says", [
    ({}, "asks for a sign-in (HTTP 401)"),
    ({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-the-password"},
     "refused the sign-in of user 'admin' (HTTP 401)"),
], ids=["missing", "wrong"])
def test_bad_credentials_fail_in_one_line_before_anything_runs(tmp_path, auth_server, credentials, says):
    started = time.time()
    out = search(tmp_path, auth_server, credentials)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], out.stderr
    assert "MLFLOW_TRACKING_USERNAME" in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]
    assert "unreachable" not in lines[0]  # the server is up: the fix is the sign-in, not starting it
    assert out.stdout == ""  # no search header: Ray never started, nothing trained
    assert not (tmp_path / "ray").exists()
    assert "tricktune/mixup_alpha" not in experiments(auth_server)
    assert time.time() - started < 120


@pytest.mark.slow
def test_a_search_with_the_right_credentials_is_recorded_on_the_server(tmp_path, auth_server):
    out = search(tmp_path, auth_server, dict(zip(SIGN_IN, ADMIN)))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    with as_admin():
        client = MlflowClient(auth_server)
        runs = client.search_runs([client.get_experiment_by_name("tricktune/mixup_alpha").experiment_id])
    trials = [r for r in runs if "trial_id" in r.data.tags]
    (parent,) = [r for r in runs if r.data.tags.get("tricktune_role") == "search"]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials + [parent])
    assert parent.data.tags["state"] == "finished"
