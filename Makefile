# Everything a developer or CI runs. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_FLAGS ?= -q
# Test processes for the integration and e2e suites (pytest-xdist), each with its own
# control plane: the tests mostly wait on the operator's ticks, so two halve the time
# even on two cores. WORKERS=0 runs them in this process.
WORKERS ?= 2
# `make chaos`: rollouts, seed (empty: a new one, printed) and profile (soak, or ci as in `make test`)
N ?= 100
SEED ?=
PROFILE ?= soak
KUBECONFIG_FILE := .cache/kubeconfig
# Each suite's kube-apiserver audit log and the RBAC it granted (tests/testbed/audit.py),
# for `make rbac-audit`.
AUDIT_DIR := $(CURDIR)/.cache/audit
AUDITED = TESTBED_AUDIT_DIR=$(AUDIT_DIR)/$(1) $(PY) -m pytest -p testbed.audit_plugin
# `make run` uses $KUBECONFIG when set, else the cluster from `make cluster-up`.
RUN_KUBECONFIG = $(or $(KUBECONFIG),$(wildcard $(KUBECONFIG_FILE)))

.PHONY: help prereqs venv lint format typecheck unit integration e2e test generate \
        verify-generated lock lock-check rbac-audit binaries testbin helm helm-quiet \
        prometheus prometheus-quiet demo e2e-kind bench cluster-up cluster-down run clean \
        peers bench-peers bench-scale bench-smoke chaos chaos-ci

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

prereqs: ## check for Go, Python and openssl (all the rest is built or installed)
	@PYTHON=$(PYTHON) hack/prereqs.sh

venv: $(VENV)/.installed ## create the virtualenv with runtime and dev dependencies

$(VENV)/.installed: pyproject.toml
	@PYTHON=$(PYTHON) hack/prereqs.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

lint: venv ## ruff lint and format check
	$(VENV)/bin/ruff check operator tests e2e
	$(VENV)/bin/ruff format --check operator tests e2e

format: venv ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix operator tests e2e
	$(VENV)/bin/ruff format operator tests e2e

typecheck: venv ## mypy --strict on the operator package
	$(VENV)/bin/mypy --strict operator/modelrollout

generate: venv ## write the CRD (crds/, the chart, manifests/base) and docs/api.md from the models
	$(PY) -m modelrollout.api.crd

verify-generated: venv ## fail if the committed CRDs or API reference differ from the models
	$(PY) -m modelrollout.api.crd --check

lock: venv ## rewrite requirements/*.lock (the image's pinned dependencies) from pyproject.toml
	@hack/lock.sh

lock-check: venv ## fail if requirements/*.lock do not match pyproject.toml
	@hack/lock.sh --check

unit: venv prometheus-quiet ## pure tests: models, CRD generation, the decision core, alerts (promtool)
	$(PY) -m pytest $(PYTEST_FLAGS) tests/unit

integration: venv testbin helm-quiet prometheus-quiet ## tests against real etcd, kube-apiserver, Prometheus and the operator (audited)
	$(call AUDITED,integration) $(PYTEST_FLAGS) -n $(WORKERS) tests/integration

e2e: venv testbin helm-quiet prometheus-quiet ## end-to-end scenarios: model servers, traffic, Prometheus, the operator (audited)
	$(call AUDITED,e2e) $(PYTEST_FLAGS) -n $(WORKERS) tests/e2e

rbac-audit: venv helm-quiet ## the operator's requests in the last full integration and e2e runs vs the chart's RBAC
	@PYTHONPATH=tests $(PY) -m testbed.rbac_audit

e2e-kind: venv ## the scenarios on a kind cluster with real pods (needs Docker and kind; not in CI)
	@e2e/kind/run.sh

chaos: venv testbin helm-quiet prometheus-quiet ## chaos soak: N rollouts (100) under a seeded fault schedule; SEED=.. N=.. PROFILE=.. replays a run
	@PYTHONPATH=tests $(PY) -m chaos --n $(N) --profile $(PROFILE) $(if $(SEED),--seed $(SEED))

chaos-ci: venv testbin helm-quiet prometheus-quiet ## the soak's own tests and its CI-sized run (10 rollouts, seed 1414)
	$(PY) -m pytest $(PYTEST_FLAGS) tests/chaos

bench: $(VENV)/.bench-installed ## speed and memory as ratios against floors and peers run side by side (BENCH_ROWS, BENCH_FEATURES)
	@$(PY) hack/bench.py

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

test: lint typecheck verify-generated lock-check unit integration e2e bench-smoke chaos-ci ## everything CI runs
	@$(MAKE) --no-print-directory rbac-audit

binaries: testbin helm-quiet prometheus-quiet peers ## build (or reuse) every Go binary the tests use

# -- beside Flagger and Argo Rollouts, and at scale (tests/bench/, docs/benchmarks.md) --
peers: ## build (or reuse) Flagger and Argo Rollouts from Go modules (hack/peers/)
	@hack/peers/build.sh flagger >/dev/null
	@hack/peers/build.sh argo-rollouts >/dev/null

bench-peers: venv testbin helm-quiet prometheus-quiet peers ## breach to rollback: ours, Flagger, Argo Rollouts (TRIALS=5)
	@PYTHONPATH=tests $(PY) -m bench.peers --trials $(or $(TRIALS),5)

bench-scale: venv testbin helm-quiet prometheus-quiet peers ## 200, 1,000, 2,000 rollouts on one replica; 200 Flagger (WINDOW=600)
	@$(VENV)/bin/python -m pip install -q py-spy
	@PYTHONPATH=tests $(PY) -m bench.scale --rollouts 200,1000,2000 --flagger 200 \
		--window $(or $(WINDOW),600) --profile .cache/bench/profile

# That every bench still runs, not what it measures: the pure benches at tiny sizes
# without Evidently, then one trial per peer and 50 rollouts at scale.
bench-smoke: venv testbin helm-quiet prometheus-quiet peers
	@BENCH_ROWS=2000 BENCH_FEATURES=5 BENCH_REPEAT=1 BENCH_EVIDENTLY_ROWS=0 $(PY) hack/bench.py >/dev/null
	@echo "bench smoke: the pure benches ran"
	$(PY) -m pytest $(PYTEST_FLAGS) tests/bench

testbin: ## build (or reuse) etcd, kube-apiserver and kubectl from Go modules
	@hack/testbin/build.sh >/dev/null

helm: ## build (or reuse) helm from Go modules (hack/helm/go.mod); prints its path
	@hack/helm/build.sh

helm-quiet:  # the tests install the chart's RBAC with it
	@hack/helm/build.sh >/dev/null

prometheus: ## build (or reuse) prometheus and promtool from Go modules; prints their folder
	@hack/prometheus/build.sh

prometheus-quiet:
	@hack/prometheus/build.sh >/dev/null

# The first time, the virtualenv and the two Go builds go side by side: pip waits on
# the network while Go compiles.
demo: prereqs ## the whole loop on a local cluster: two rollouts of a model, shown live, then a summary
	@GO_BUILD_PROGRESS=lines $(MAKE) --no-print-directory -j3 venv testbin prometheus-quiet
	@$(PY) e2e/demo.py

cluster-up: venv testbin ## start a local control plane in the background (idempotent), with a demo rollout
	@PYTHONPATH=tests $(PY) -m testbed up >/dev/null
	@echo "demo rollout applied: kubectl --kubeconfig $(KUBECONFIG_FILE) get mro -n demo"
	@echo $(abspath $(KUBECONFIG_FILE))

cluster-down: venv ## stop the local control plane
	@PYTHONPATH=tests $(PY) -m testbed down

run: venv ## run the operator against the current kubeconfig
	$(if $(RUN_KUBECONFIG),KUBECONFIG=$(RUN_KUBECONFIG)) $(PY) -m modelrollout --log-format plain

clean: cluster-down ## remove caches (keeps built binaries)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
