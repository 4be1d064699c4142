# The two set-up commands of README.rst, and what they stand on.
PYTHON ?= python3
VENV ?= .venv
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check
VPIP = $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test machine wheel venv images dev dev-test bench

## make demo: install the package and run the demo workflow (local back end, embedded MLflow store)
demo:
	$(PIP) .
	cd /tmp && $(PYTHON) -m scanflow_nb.demo $(CURDIR)/demo_app

## make machine: Debian packages, the Docker engine and a single-node swarm (root)
machine:
	bash .ci/machine.sh

## make test: the suite against what users install: the wheel, in a virtual environment, every extra
test: venv images
	SCANFLOW_TEST_INSTALLED=1 $(VENV)/bin/pytest

## make wheel: the sdist, and the wheel built from it, in dist/
wheel:
	$(PIP) build
	rm -rf dist
	$(PYTHON) -m build --outdir dist . >/dev/null
	@ls dist

## make venv: $(VENV) with the wheel (not the checkout) and every extra
venv: wheel
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VPIP) "$$(ls dist/scanflow_nb-*.whl)[all,test,browser]"
	$(VPIP) --force-reinstall --no-deps "$$(ls dist/scanflow_nb-*.whl)"

## make images: the registry-free base image and the tracker image, built once and reused by tag
images:
	if docker info >/dev/null 2>&1; then $(VENV)/bin/python .ci/images.py; else echo "images: no Docker engine, skipped"; fi

## make dev / dev-test: an editable install for development, and the suite against the checkout
dev:
	$(PIP) -e '.[all,test,browser]'

dev-test: dev
	$(PYTHON) -m pytest

## make bench: every benchmark script, printing its figures
bench:
	$(PIP) -e '.[all,test]'
	for script in bench/[!_]*.py; do echo "== $$script"; $(PYTHON) $$script || exit 1; done
