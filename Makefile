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
	$(if $(CONFIRM),--confirm-seeds $(CONFIRM)) $(if $(CONFIRM_TOP),--confirm-top $(CONFIRM_TOP)) $(if $(SMOKE),--smoke) $(if $(DASHBOARD),--dashboard) \
	$(if $(SAMPLES),--samples $(SAMPLES)) $(foreach kv,$(SET),--set $(kv))

.PHONY: help install search resume smoke lint test test-slow test-all bench bench-gpu report mlflow dashboard teacher data clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install tricktune with torch, Ray Tune (+dashboard), Optuna, MLflow, pytest

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

search: $(STAMP) ## run a search: make search SPACE=mixup_alpha [RECIPE=cub200_resnet50 DATA_DIR=/data/CUB_200_2011] [CONFIRM=seeds, 0=off] [CONFIRM_TOP=K] [RESUME=1] [SMOKE=1] [DASHBOARD=1] [SAMPLES=N] [SET="lr=0.05 epochs=4"]
	$(PY) -m search $(SPACE) $(SEARCH_FLAGS)

smoke: $(STAMP) ## the whole search path in well under a minute (tiny data, 1-2 epochs, few trials)
	$(PY) -m search $(SPACE) --smoke $(if $(RECIPE),--recipe $(RECIPE)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

dashboard: $(STAMP) ## a search with the Ray dashboard on http://127.0.0.1:8265
	$(PY) -m search $(SPACE) --dashboard $(SEARCH_FLAGS)

report: $(STAMP) ## write reports/$(SPACE)/report.md + plots from the MLflow runs of a search
	$(PY) -m search.report $(SPACE)

mlflow: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 (store: $$MLFLOW_TRACKING_URI)
	$(VENV)/bin/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --host 127.0.0.1 --port 5000

teacher: $(STAMP) ## train a recipe's distillation teacher into teachers/<recipe>.pt: make teacher [RECIPE=...] [DATA_DIR=...]
	$(PY) -m search.teacher $(if $(RECIPE),--recipe $(RECIPE)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

lint: $(STAMP) ## ruff over the tree (rules in pyproject.toml); CI runs it before the tests
	$(VENV)/bin/ruff check .

test: $(STAMP) ## the test suite (fast tests; what CI runs first)
	$(PY) -m pytest -q

test-slow: $(STAMP) ## the slow end-to-end tests (real searches, interruptions, a 2-node cluster)
	$(PY) -m pytest -q -m slow

bench: $(STAMP) ## benchmarks: prints ratios measured side by side in one run, with goals
	$(PY) -m search.bench

bench-gpu: $(STAMP) ## GPU figures (ResNet-50 img/s, CUB recipe s/epoch, trial packing, utilisation); <10 min on a GPU
	$(PY) -m search.bench_gpu

data: $(STAMP) ## rebuild the embedded Fashion-MNIST subset from the Debian package
	$(PY) trainable/assets/make_fashion_mnist_subset.py

clean: ## remove results (keeps .venv and mlflow.db)
	rm -rf ray_results runs reports/*/
