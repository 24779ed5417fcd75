# The two commands:  `make lab` (set up, then JupyterLab with the extension on the embedded default)
#                    `make test` (set up, then the whole test suite: pytest + the Chromium UI tests)
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Tests and `make lab` keep dask's user config out of the home folder.
export DASK_CONFIG ?= $(abspath $(VENV))/etc/dask

.PHONY: lab setup test pytest ui-test bench bench-real kube-binaries clean

$(VENV)/.installed: pyproject.toml package.json
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

lab: setup
	sh scripts/lab.sh $(LAB_ARGS)

# kube-apiserver + kube-controller-manager v1.20.2 for the real-control-plane tests, built once (~5 min) into
# $${JDK_KUBE_CACHE:-~/.cache/jupyter-dask-kube} from Debian's source package; needs root for apt-get the first
# time. Where it cannot build, the real tier is skipped (and in CI, where $$CI is set, this fails).
kube-binaries: setup
	python -m jupyter_dask_kube.testing.kube_build --optional

pytest: setup kube-binaries
	python -m pytest -p no:cacheprovider

ui-test: setup
	bash ui-tests/run.sh

test: pytest ui-test

bench: setup
	python benchmarks/control_plane.py

bench-real: setup kube-binaries
	python benchmarks/real_apiserver.py

clean:
	rm -rf $(VENV) node_modules ui-tests/node_modules jupyter_dask_kube/labextension lib
