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
    assert list(elsewhere.iterdir()) == []                    # no ./mlruns in the user's folder
    assert experiment_id(client, "serving") == client.get_run(run_id).info.experiment_id
