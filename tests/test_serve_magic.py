"""`%scanflow serve` and `%scanflow stop` in a real IPython shell."""

import pytest
from IPython.core.error import UsageError
from serve_support import MODEL, Client, logged_rows

from scanflow_nb.serve import running_services

pytestmark = pytest.mark.usefixtures("spool_in_tmp")


def test_serve_list_and_stop_from_the_notebook(shell, registry, capsys):
    shell.run_line_magic("scanflow", f"app {registry.app.path}")
    capsys.readouterr()
    service = shell.run_line_magic(
        "scanflow", f"serve models:/{MODEL}@champion -w serve --name nb --flush-seconds 600 --batch-rows 5000"
    )
    try:
        out = capsys.readouterr().out
        assert f"serving models:/{MODEL}@champion (v1) as 'nb' at {service.url}/invocations" in out
        assert "%scanflow stop nb" in out
        Client(service.url).predict(registry.X[:7])
        shell.run_line_magic("scanflow", "serve")
        assert f"<service 'nb' at {service.url}: running" in capsys.readouterr().out
    finally:
        shell.run_line_magic("scanflow", "stop nb")
    assert "stopped 'nb': 7 rows answered, 7 logged, 0 dropped" in capsys.readouterr().out
    assert logged_rows(registry.uri, "serve", "nb") == 7  # the workflow's experiment: where its checker looks
    assert "nb" not in running_services()
    with pytest.raises(UsageError, match="no service 'nb' was started here"):
        shell.run_line_magic("scanflow", "stop nb")


def test_bad_serve_lines_are_one_usage_error(shell, registry, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shell.run_line_magic("scanflow", f"app {registry.app.path}")
    with pytest.raises(UsageError, match="say where to log the traffic"):
        shell.run_line_magic("scanflow", f"serve models:/{MODEL}@champion")
    with pytest.raises(UsageError, match="unknown workflow 'nope'"):
        shell.run_line_magic("scanflow", f"serve models:/{MODEL}@champion -w nope")
    with pytest.raises(UsageError, match="no model behind models:/missing@champion"):
        shell.run_line_magic("scanflow", "serve models:/missing@champion -w serve")
    assert running_services() == {}
