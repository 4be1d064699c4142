"""Images: host pip settings, Dockerfile layering, content-hash tags, real builds and failures."""

import uuid

import pytest

from scanflow_nb.containers import dockerfile as df
from scanflow_nb.containers.images import ImageBuilder, ImageBuildError
from scanflow_nb.containers.pipconf import host_pip_settings
from scanflow_nb.spec import Executor


def test_pip_settings_come_from_pip_config_and_environment(tmp_path, monkeypatch):
    cert = tmp_path / "corp-ca.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = https://pypi.corp.example/simple\n"
        "extra-index-url = file:///srv/wheels https://extra.corp.example/simple\n"
        f"trusted-host = pypi.corp.example\ncert = {cert}\nfind-links = /opt/wheels\n"
    )
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    settings = host_pip_settings()
    assert settings.index_url == "https://pypi.corp.example/simple"
    assert settings.extra_index_urls == ("https://extra.corp.example/simple",)
    assert settings.trusted_hosts == ("pypi.corp.example",)
    assert settings.cert == cert
    assert set(settings.skipped) == {"file:///srv/wheels", "/opt/wheels"}
    text = settings.pip_conf()
    assert "index-url = https://pypi.corp.example/simple" in text and "file://" not in text
    assert "cert = /etc/scanflow/ca-bundle.crt" in text
    monkeypatch.setenv("PIP_INDEX_URL", "https://override.example/simple")  # environment wins, as in pip
    assert host_pip_settings().index_url == "https://override.example/simple"


def test_generated_dockerfile_puts_dependencies_before_code_and_drops_root():
    text = df.executor_dockerfile("base:1", host_pip_settings(), ["wf/a.py"])
    lines = text.splitlines()
    at = {
        key: next(i for i, line in enumerate(lines) if line.startswith(key))
        for key in (
            "FROM base:1",
            "COPY scanflow-pip.conf",
            "RUN (id -u scanflow",
            "RUN python -m pip install",
            "USER scanflow",
            "COPY code/wf/a.py /opt/scanflow/app/wf/a.py",
        )
    }
    assert list(at.values()) == sorted(at.values())
    assert lines[-1].startswith("COPY code/") and "USER root" not in "\n".join(lines[at["USER scanflow"] :])


@pytest.fixture
def builder(base_image):
    lines = []
    b = ImageBuilder(base_image, echo=lines.append)
    b.lines = lines
    return b


@pytest.mark.docker
def test_tags_follow_content_and_code_changes_reuse_the_dependency_layer(tmp_path, builder, docker_engine):
    (tmp_path / "wf").mkdir()
    script = tmp_path / "wf" / "job.py"
    unique = f"# {uuid.uuid4()}\n"  # a new image on every test run
    script.write_text(f"import mlflow, six\nprint('v1')\n{unique}")
    ex = Executor("job", file="wf/job.py", requirements=["six"])
    tag = builder.executor_image(tmp_path, "wf", ex)
    assert tag.startswith("scanflow/wf-job:")
    builder.lines.clear()
    assert builder.executor_image(tmp_path, "wf", ex) == tag  # nothing changed: found by tag
    assert builder.lines == [f"[build wf/job] up to date: {tag}"]
    script.write_text(f"import mlflow, six\nprint('v2')\n{unique}")
    builder.lines.clear()
    new_tag = builder.executor_image(tmp_path, "wf", ex)
    assert new_tag != tag
    out = "\n".join(builder.lines)
    install = out.split("RUN python -m pip install")[1].split("Step")[0]
    assert "Using cache" in install  # dependency layer reused
    run = docker_engine.containers.run(
        new_tag, ["sh", "-c", "id -u; python /opt/scanflow/app/wf/job.py; cat /etc/pip.conf"], remove=True
    ).decode()
    assert run.splitlines()[:2] == [str(df.UID), "v2"] and "cert = /etc/scanflow/ca-bundle.crt" in run


@pytest.mark.docker
def test_requirements_that_fail_to_install_show_the_error_and_leave_nothing_running(tmp_path, builder, docker_engine):
    before = {c.id for c in docker_engine.containers.list(all=True, ignore_removed=True)}
    ex = Executor("bad", code="print(1)", requirements=["scanflow-no-such-package-xyz==0.0.1"])
    with pytest.raises(ImageBuildError, match="building the image of wf/bad failed.*returned a non-zero code"):
        builder.executor_image(tmp_path, "wf", ex)
    assert "No matching distribution found for scanflow-no-such-package-xyz" in "\n".join(builder.lines)
    new = [c for c in docker_engine.containers.list(all=True, ignore_removed=True) if c.id not in before]
    assert [c.name for c in new if "scanflow.app" not in c.labels] == []  # runs of other tests carry their app
    assert not docker_engine.images.list(name="scanflow/wf-bad")


@pytest.mark.docker
def test_own_dockerfile_and_existing_image_executors(tmp_path, builder, base_image, docker_engine):
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "Dockerfile").write_text(
        f'FROM {base_image}\nCOPY hello.py /hello.py\nCMD ["python", "/hello.py"]\n'
    )
    (tmp_path / "custom" / "hello.py").write_text("print('custom image ran')\n")
    tag = builder.executor_image(tmp_path, "wf", Executor("own", dockerfile="custom/Dockerfile"))
    assert docker_engine.containers.run(tag, remove=True).decode().strip() == "custom image ran"
    assert builder.executor_image(tmp_path, "wf", Executor("given", image=base_image)) == base_image
    with pytest.raises(ImageBuildError, match="image 'scanflow/never-built:1' is not on this engine"):
        builder.executor_image(tmp_path, "wf", Executor("missing", image="scanflow/never-built:1"))


@pytest.mark.docker
def test_base_image_is_reused_by_tag_and_runs_python_311(base_image, docker_engine):
    from scanflow_nb.containers.base import build_base_image

    said = []
    assert build_base_image(base_image, echo=said.append) == base_image
    assert said == [f"base image {base_image} already exists (force=True rebuilds it)"]
    out = docker_engine.containers.run(
        base_image, ["python", "-c", "import sys, ssl; print(sys.version_info[:2])"], remove=True
    ).decode()
    assert out.strip() == "(3, 11)"
