"""What a person sees in a real browser: MLflow's runs view of a search, the Ray dashboard.

Each test runs a real (tiny) search, starts the real server, and drives Debian's chromium
with Playwright for Python (``executable_path``: Playwright never downloads a browser here).
Screenshots are kept: each test prints where it wrote them (pytest -s), and copies them into
``$TRICKTUNE_SCREENSHOTS`` when that is set (CI: reports/screenshots/).

Without chromium (``apt-get install chromium``) or Playwright (the test extra), they skip.
"""

import json
import os
import pty
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import tiny_space_yaml
from mlflow.tracking import MlflowClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox: CI runs as root, where chromium refuses its sandbox. The rest keeps a test browser
# from calling home (component updates, sync, field trials) on a machine without internet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]

pytestmark = pytest.mark.slow  # each runs a search and starts a server: 1-2 min on 2 busy cores


@pytest.fixture(scope="module")
def browser():
    if not os.path.isfile(CHROMIUM):
        pytest.skip("no chromium: install Debian's package with `apt-get install chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no Playwright for Python: pip install -e '.[test]' (then `apt-get install chromium`; "
                    "never `playwright install`)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keep_screenshot(page, tmp_path, name: str) -> str:
    path = str(tmp_path / name)
    page.screenshot(path=path)
    print(f"screenshot: {path}")
    folder = os.environ.get("TRICKTUNE_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        shutil.copy(path, os.path.join(folder, name))
        print(f"screenshot: {os.path.join(folder, name)}")
    return path


def wait_until(check, timeout: float, what: str, interval: float = 1.0, log=lambda: ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{log()[-4000:]}")


def stop_group(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# --- MLflow ------------------------------------------------------------------------------------

@pytest.fixture
def mlflow_ui(tmp_path):
    """Starts `make mlflow`'s command on a free port against tmp_path's store; returns its base URL.

    Called once the search has created the store: two processes creating one fresh SQLite store
    at once race on its tables."""
    started = []

    def start() -> str:
        port = free_port()
        log = open(tmp_path / "mlflow_ui.log", "w")
        # As `make mlflow` starts it: one worker, no GenAI job runner (14 processes otherwise).
        started.append((subprocess.Popen(
            [os.path.join(BIN, "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=tmp_path, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}), log))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc, log in started:
        stop_group(proc)
        log.close()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


# The runs table's rows in the order shown (ag-grid positions rows itself, so DOM order is not
# it), each run's name: the last line of its cell, after the colour chip's label.
ROW_NAMES = """Array.from(document.querySelectorAll('.ag-row[row-index]'))
  .map(r => [Number(r.getAttribute('row-index')), r.querySelector('[col-id="attributes.`Run Name`"]')])
  .filter(([, cell]) => cell).map(([i, cell]) => [i, cell.innerText.trim().split('\\n').pop()])"""


def test_mlflow_opens_the_search_on_its_runs_table(tmp_path, browser, mlflow_ui):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "search", "mixup_alpha", "--smoke", "--storage", str(tmp_path / "ray")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    link = re.search(r"runs: (http://127\.0\.0\.1:5000/\S+)", out.stdout).group(1)  # the link the summary prints

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("tricktune/mixup_alpha")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # a model-training experiment
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("tricktune_role") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trials = [r for r in children if r.data.tags.get("stage") == "search"]
    confirms = [r for r in children if r.data.tags.get("stage") == "confirm"]
    assert len(trials) == 3 and len(confirms) in (2, 4)  # the best (if any finished) and the baseline x 2 seeds
    names = sorted(r.info.run_name for r in children)
    assert "baseline: mixup_alpha=0 lr=0.025" in names  # the recipe's lr
    label = r"(baseline|(baseline: )?mixup_alpha=[\d.e-]+ lr=[\d.e-]+)"
    assert all(re.fullmatch(label, r.info.run_name) for r in trials), names
    assert all(re.fullmatch(rf"confirm {label} seed=100[01]", r.info.run_name) for r in confirms), names

    base = mlflow_ui()
    wait_until(lambda: answers(f"{base}/health"), 180, "mlflow ui to answer")
    page = browser.new_page(viewport={"width": 1600, "height": 800})
    page.goto(link.replace("http://127.0.0.1:5000", base))
    for name in [parent.info.run_name, *names]:
        page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    # The training runs view, not the GenAI overview (traces, token usage) MLflow 3 opens on otherwise.
    assert page.get_by_role("heading", name="Runs").is_visible()
    assert page.get_by_text("Token Usage").count() == 0
    header = page.locator('.ag-header-cell[col-id="metrics.`val_top1`"]')
    assert header.is_visible() and header.inner_text().strip() == "val_top1"
    # Each run's outcome beside its name, and no red cross for a trial ASHA stopped: its status is
    # FINISHED, its outcome stopped_early (only an interrupted or failed run is drawn otherwise).
    outcome = page.locator('.ag-header-cell[col-id="tags.`outcome`"]')
    assert outcome.is_visible() and outcome.bounding_box()["x"] < header.bounding_box()["x"]
    assert all(r.info.status == "FINISHED" for r in children), [(r.info.run_name, r.info.status) for r in children]
    # Trials (search and confirmation runs) are listed flat under their search (not collapsed
    # into the parent), best val_top1 first, then the parent.
    shown = [name for _, name in sorted(page.evaluate(ROW_NAMES))]
    top1 = {r.info.run_name: r.data.metrics["val_top1"] for r in children}
    k = len(children)
    assert sorted(shown[:k]) == names and shown[k] == parent.info.run_name, shown
    assert [top1[n] for n in shown[:k]] == sorted(top1.values(), reverse=True)
    close = page.get_by_role("button", name="Close")  # the "MLflow Assistant" side panel, for the picture
    if close.count() == 1:
        close.click()
        time.sleep(1)
    keep_screenshot(page, tmp_path, "mlflow_runs.png")
    page.close()


# --- the Ray dashboard ----------------------------------------------------------------------

class Terminal:
    """A search on a pseudo-terminal: it prints what a person sees (the live view, the token)."""

    def __init__(self, args, env, cwd):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True)
        os.close(slave)
        self.chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, args=(master,), daemon=True)
        self._reader.start()

    def _read(self, fd):
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            self.chunks.append(data)
        os.close(fd)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def test_dashboard_search_prints_where_and_how_to_sign_in(tmp_path, browser):
    space = tmp_path / "dash.yaml"
    space.write_text(tiny_space_yaml("is the dashboard reachable?", {"mixup_alpha": {"type": "uniform", "low": 0.0,
                                                                                     "high": 1.0}},
                                     samples=2, epochs=40, train_subset=256))
    port = free_port()
    token_file = tmp_path / "auth_token"  # this test's own token: the machine's ~/.ray is left alone
    token_file.write_text(secrets.token_hex(32))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1",
           "TRICKTUNE_DASHBOARD_PORT": str(port), "RAY_AUTH_TOKEN_PATH": str(token_file), "COLUMNS": "120",
           "LINES": "30"}
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        env.pop(key, None)
    term = Terminal([sys.executable, "-m", "search", str(space), "--dashboard", "--storage", str(tmp_path / "ray")],
                    env, ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        found = wait_until(lambda: re.search(r"Ray dashboard  (\S+)\s+sign in with the token (\S+)", term.text),
                           300, "the dashboard lines", interval=2, log=lambda: term.text)
        assert found.group(1) == url
        token = found.group(2)
        assert token == token_file.read_text()  # the token Ray uses, printed to the user's terminal
        wait_until(lambda: " running" in term.text, 300, "a running trial", interval=2, log=lambda: term.text)

        # Authentication is on: the API refuses a request without the token.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/jobs/", timeout=10)
        assert refused.value.code == 401

        page = browser.new_page(viewport={"width": 1600, "height": 800})
        page.goto(url)
        dialog = page.get_by_role("dialog", name="Authentication Token Required")
        dialog.wait_for(timeout=60_000)
        assert "ray get-auth-token" in dialog.inner_text()
        page.get_by_role("textbox", name="Authentication Token").fill(token)  # as a person pastes it
        page.get_by_role("button", name="Submit").click()
        dialog.wait_for(state="hidden", timeout=30_000)
        page.goto(f"{url}/#/jobs")
        job = page.get_by_role("row").filter(has_text=f"-m search {space} --dashboard")
        job.first.wait_for(timeout=60_000)
        assert "RUNNING" in job.first.inner_text()
        keep_screenshot(page, tmp_path, "ray_dashboard_jobs.png")
        page.close()
    finally:
        if term.proc.poll() is None:
            term.proc.send_signal(signal.SIGINT)  # Ctrl-C: the search stops gracefully
            try:
                term.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                stop_group(term.proc)
        term._reader.join(timeout=10)
    output = term.text
    # The live view was redrawn in place, and a stopped search still says how to go on.
    assert "\x1b[J" in output and "search    [" in output
    assert "INTERRUPTED" in output and "Checkpoint successfully created" not in output
    (tmp_path / "terminal.txt").write_text(json.dumps(output))
