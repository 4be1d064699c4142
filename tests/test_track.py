"""The embedded store keeps everything in the app's state folder, whoever creates the experiment."""

import numpy as np

from scanflow_nb.track import embedded_uri, experiment_id, get_client


def test_artifacts_of_new_experiments_stay_beside_the_store(tmp_path, monkeypatch):
    from scanflow_nb.check import log_batch

    elsewhere = tmp_path / "notebook_folder"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    state = tmp_path / "app" / ".scanflow"
    state.mkdir(parents=True)
    uri = embedded_uri(state)
    run_id = log_batch(np.zeros((3, 4)), uri, "serving")
    client = get_client(uri)
    assert client.get_run(run_id).info.artifact_uri.startswith((state / "mlartifacts" / "serving").as_uri())
    assert (state / "mlartifacts" / "serving").is_dir()
    assert list(elsewhere.iterdir()) == []  # no ./mlruns in the user's folder
    assert experiment_id(client, "serving") == client.get_run(run_id).info.experiment_id


def test_experiment_created_by_many_threads_at_once_is_one_experiment(tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.tracking import MlflowClient

    uri = embedded_uri(tmp_path)
    get_client(uri).search_experiments()  # the store exists
    clients = [MlflowClient(uri) for _ in range(6)]  # separate connections, as separate threads have
    for round_ in range(5):
        start = threading.Barrier(len(clients))

        def create(client, name=f"shared{round_}", start=start):
            start.wait()
            return experiment_id(client, name)

        with ThreadPoolExecutor(len(clients)) as pool:
            assert len(set(pool.map(create, clients))) == 1
