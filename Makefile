# tricktune: `make help` lists the targets. Everything runs from a local .venv that the
# first target needing it creates (torch 2.14.1 / torchvision 0.29.1 come from this
# machine's disk; elsewhere pip downloads them).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SPACE ?= mixup_alpha
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
# Two cores here; more torch threads than cores only adds contention.
export OMP_NUM_THREADS ?= 2

SEARCH_FLAGS = $(if $(RECIPE),--recipe $(RECIPE)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(RESUME),--resume) \
	$(if $(CONFIRM),--confirm-seeds $(CONFIRM)) $(if $(CONFIRM_TOP),--confirm-top $(CONFIRM_TOP)) $(if $(SMOKE),--smoke) \
	$(if $(DASHBOARD),--dashboard) $(if $(VERBOSE),--verbose) $(if $(SAMPLES),--samples $(SAMPLES)) \
	$(foreach kv,$(SET),--set $(kv))

.PHONY: help install search resume smoke lint test test-slow test-browser test-all bench bench-gpu report mlflow \
	dashboard teacher data clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install tricktune with torch, Ray Tune (+dashboard), Optuna, MLflow, pytest

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

search: $(STAMP) ## run a search: make search SPACE=mixup_alpha [RECIPE=cub200_resnet50 DATA_DIR=/data/CUB_200_2011] [CONFIRM=seeds, 0=off] [CONFIRM_TOP=K] [RESUME=1] [SMOKE=1] [DASHBOARD=1] [VERBOSE=1] [SAMPLES=N] [SET="lr=0.05 epochs=4"]
	$(PY) -m search $(SPACE) $(SEARCH_FLAGS)

smoke: $(STAMP) ## the whole search path in well under a minute (tiny data, 1-2 epochs, few trials)
	$(PY) -m search $(SPACE) --smoke $(if $(RECIPE),--recipe $(RECIPE)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

dashboard: $(STAMP) ## a search with the Ray dashboard on http://127.0.0.1:8265 (it prints how to sign in)
	$(PY) -m search $(SPACE) --dashboard $(SEARCH_FLAGS)

report: $(STAMP) ## write reports/$(SPACE)/report.md + plots from the MLflow runs of a search
	$(PY) -m search.report $(SPACE)

# One worker and no GenAI job runner (scorers, issue detection): 2 processes instead of the 14 that
# `mlflow ui` 3.17 starts by default (counted with ps), on a machine with 2 cores.
mlflow: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 (store: $$MLFLOW_TRACKING_URI); open the `runs:` link a search printed
	@echo "Open the 'runs:' link a search printed (its runs table). From the home page instead, set the"
	@echo "sidebar's 'GenAI | Model training' switch to Model training once: MLflow 3 opens experiments on GenAI."
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" \
		--host 127.0.0.1 --port 5000 --workers 1

teacher: $(STAMP) ## train a recipe's distillation teacher into teachers/<recipe>.pt: make teacher [RECIPE=...] [DATA_DIR=...]
	$(PY) -m search.tools.teacher $(if $(RECIPE),--recipe $(RECIPE)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

lint: $(STAMP) ## ruff over the tree (rules in pyproject.toml); CI runs it before the tests
	$(VENV)/bin/ruff check .

test: $(STAMP) ## the test suite (fast tests; what CI runs first); prints its 10 slowest
	$(PY) -m pytest -q --durations=10

test-slow: $(STAMP) ## the slow end-to-end tests (real searches, interruptions, a 2-node cluster, the browser)
	$(PY) -m pytest -q -m slow --durations=10

test-browser: $(STAMP) ## MLflow's runs view and the Ray dashboard in Debian's chromium; screenshots in reports/screenshots/
	TRICKTUNE_SCREENSHOTS=reports/screenshots $(PY) -m pytest -q -m slow tests/test_browser.py -rs

bench: $(STAMP) ## benchmarks: ratios measured side by side in one run, with goals; writes reports/bench.md
	$(PY) -m search.bench

bench-gpu: $(STAMP) ## GPU figures (ResNet-50 img/s, CUB recipe s/epoch, trial packing, utilisation); <10 min on a GPU
	$(PY) -m search.bench.gpu

data: $(STAMP) ## rebuild the embedded Fashion-MNIST subset from the Debian package
	$(PY) trainable/assets/make_fashion_mnist_subset.py

clean: ## remove results (keeps .venv and mlflow.db)
	rm -rf ray_results runs reports/*/
