# The two set-up commands of README.rst, and what they stand on.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test machine bench

## make demo: install the package and run the demo workflow (local back end, embedded MLflow store)
demo:
	$(PIP) -e .
	$(PYTHON) -m scanflow_nb.demo demo_app

## make machine: Debian packages, the Docker engine, the base image and a single-node swarm (root)
machine:
	bash .ci/machine.sh

## make test: install every extra and run the whole suite
test:
	$(PIP) -e '.[all,test,browser]'
	$(PYTHON) -m pytest

## make bench: every benchmark script, printing its figures
bench:
	$(PIP) -e '.[all,test]'
	for script in bench/*.py; do echo "== $$script"; $(PYTHON) $$script || exit 1; done
