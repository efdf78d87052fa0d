"""The MLflow writer: queued records reach a real sqlite store, close() ends the writer
thread, and an unreachable server loses nothing (spooled, then imported)."""

from mlflow.tracking import MlflowClient

from search.tracking import MlflowWriter, _Op, import_pending


def _records(writer: MlflowWriter, key: str) -> None:
    writer.put(_Op("create", key, {"tags": {"mlflow.runName": key}}))
    writer.put(_Op("params", key, {"params": {"lr": 0.1, "mixup_alpha": 0.2}}))
    for epoch in (1, 2, 3):
        writer.put(_Op("metrics", key, {"metrics": [("val_top1", 50.0 + epoch, 0, epoch)]}))
    writer.put(_Op("status", key, {"status": "FINISHED"}))


def test_close_sends_everything_and_stops_the_writer_thread(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("t")
    writer = MlflowWriter(uri, exp, pending_path=str(tmp_path / "pending.jsonl"))
    writer.start()
    thread = writer._thread
    _records(writer, "trial_a")
    writer.close()
    # The sentinel must reach the thread even when it arrives in a burst with other records
    # (a bug once swallowed it: every search then waited out close()'s 30-s join).
    assert not thread.is_alive()
    run_id = writer.run_ids["trial_a"]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.1"
    steps = [m.step for m in MlflowClient(uri).get_metric_history(run_id, "val_top1")]
    assert sorted(steps) == [1, 2, 3]
    assert not (tmp_path / "pending.jsonl").exists()


def test_unreachable_server_spools_records_and_import_sends_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    store = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(store).create_experiment("t")
    pending = tmp_path / "pending.jsonl"
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    writer = MlflowWriter("http://127.0.0.1:9", exp, pending_path=str(pending))
    writer.start()
    _records(writer, "trial_b")
    writer.close(timeout=1)
    assert len(pending.read_text().splitlines()) == 6  # create, params, 3 metrics, status
    assert import_pending(str(pending), tracking_uri=store) == 6
    (run,) = MlflowClient(store).search_runs([exp])
    assert run.info.status == "FINISHED"
    assert [m.value for m in MlflowClient(store).get_metric_history(run.info.run_id, "val_top1")] == [51, 52, 53]


def test_a_replayed_epoch_is_logged_once_in_the_same_process_and_after_a_resume(tmp_path):
    # A retried trial replays epochs from its last registered checkpoint; a resumed search (a
    # new process, a new writer) can replay an epoch the stopped one had already sent.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("t")
    first = MlflowWriter(uri, exp, pending_path=str(tmp_path / "pending.jsonl"))
    first.start()
    first.put(_Op("create", "trial_c", {"tags": {"mlflow.runName": "trial_c"}}))
    for epoch in (1, 2, 1, 2):  # a retry within the process
        first.put(_Op("metrics", "trial_c", {"metrics": [("val_top1", 50.0 + epoch, 0, epoch),
                                                         ("val_loss", 2.0 - epoch / 10, 0, epoch)]}))
    first.close()
    resumed = MlflowWriter(uri, exp, pending_path=str(tmp_path / "pending.jsonl"))
    resumed.start()
    resumed.put(_Op("create", "trial_c", {"tags": {"mlflow.runName": "trial_c"}}))
    for epoch in (2, 3):  # epoch 2 replayed from the epoch-1 checkpoint, then a new epoch 3
        resumed.put(_Op("metrics", "trial_c", {"metrics": [("val_top1", 60.0 + epoch, 0, epoch),
                                                           ("val_loss", 1.0, 0, epoch)]}))
    resumed.close()
    assert resumed.run_ids["trial_c"] == first.run_ids["trial_c"]
    client = MlflowClient(uri)
    top1 = [(m.step, m.value) for m in client.get_metric_history(first.run_ids["trial_c"], "val_top1")]
    assert sorted(top1) == [(1, 51.0), (2, 52.0), (3, 63.0)]  # the first value of each epoch kept
    assert sorted(m.step for m in client.get_metric_history(first.run_ids["trial_c"], "val_loss")) == [1, 2, 3]
