# fedplane developer and CI entry points. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --no-input --disable-pip-version-check
PYTEST := $(VENV)/bin/pytest
RUFF := $(VENV)/bin/ruff
# Changes to either requirements file reinstall; the stamp records the last successful install.
INSTALL_STAMP := $(VENV)/.requirements-installed
SERVICES := scripts/services.sh

# The second, embedded pass (SQLite + filesystem storage + filesystem broker): storage and API tests.
# Folders that do not exist (yet) are left out; when none exists pytest is given them anyway and
# fails loudly, rather than silently falling back to the whole suite.
EMBEDDED_TEST_PATHS ?= apps tests/api
EMBEDDED_TESTS ?= -m "not e2e and not compat and not readme" $(or $(wildcard $(EMBEDDED_TEST_PATHS)),$(EMBEDDED_TEST_PATHS))
# The slowest tests are listed at the end of each run, to keep `make test` within its time.
PYTEST_ARGS ?= -ra --durations=15
# test-full and test-embedded run their tests in parallel pytest-xdist workers: most of the suite
# waits (processes starting, deadlines), so 3 workers on 2 cores. A file's tests share one worker
# (its module fixtures start once). PYTEST_PARALLEL= runs them serially.
PYTEST_PARALLEL ?= -n 3 --dist loadfile
ARGS ?=

# The service ports are fixed, so concurrent test runs on one machine take turns (up to 30 min).
# Children get fd 9 closed (9>&-) so no long-lived process keeps holding the lock.
define hold_services_lock
mkdir -p var/run; exec 9>var/run/services.lock; \
flock -w 1800 9 || { echo "error: another test run held var/run/services.lock for 30 min" >&2; exit 1; }
endef

# pytest exit code 5 means nothing was collected: a broken selection, so it counts as a failure.
define run_pytest
rc=0; $(PYTEST) $(1) 9>&- || rc=$$?; \
if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc
endef

.PHONY: help venv install deps protos check-protos lint format check test test-full test-embedded \
	test-chaos test-chaos-short test-fuzz test-readme fedn-venv test-compat bench bench-quick \
	experiment-stragglers experiment-privacy services-start services-stop services-status demo serve clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(PY) ## create the virtualenv .venv

$(INSTALL_STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install -q -r requirements-dev.txt
	touch $@

install: $(INSTALL_STAMP) ## install requirements-dev.txt into .venv (only when requirements changed)

deps: ## apt-install redis-server, postgresql, chromium (browser tests) and nginx (deploy tests) when missing (needs root)
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x $(PY) ] || $(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -ne 0 ]; then echo "error: missing system packages:$$missing (run 'make deps' as root)" >&2; exit 1; fi; \
		echo "installing system packages:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

protos: install ## regenerate the gRPC stubs in fedplane/proto/ from protos/fedn.proto
	PYTHON=$(PY) scripts/gen_protos.sh

check-protos: install ## fail when the committed stubs differ from what protos/fedn.proto generates
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	PYTHON=$(PY) scripts/gen_protos.sh "$$tmp"; \
	drift=0; \
	for generated in "$$tmp"/fedplane/proto/fedn_pb2*.py*; do \
		committed=fedplane/proto/$$(basename "$$generated"); \
		diff -u "$$committed" "$$generated" || { echo "error: $$committed is stale (run: make protos)" >&2; drift=1; }; \
	done; \
	exit $$drift
	@echo "protos: committed stubs match protos/fedn.proto"

lint: install ## ruff check, ruff format --check, and the import contracts of pyproject.toml
	$(RUFF) check .
	$(RUFF) format --check .
	$(VENV)/bin/lint-imports --no-cache

format: install ## apply ruff's fixes and formatting
	$(RUFF) check --fix .
	$(RUFF) format .

check: install ## Django system checks and missing migrations
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

test: deps install ## CI: services up, then protos, lint, checks, full suite on PG+S3+Redis, embedded pass, README
	@set -uo pipefail; failed=""; \
	$(hold_services_lock); \
	trap '$(SERVICES) stop' EXIT; \
	started=$$SECONDS; $(SERVICES) start 9>&- || exit 1; \
	echo "== services started in $$((SECONDS - started))s"; \
	eval "$$($(SERVICES) env)"; \
	for step in check-protos lint check fedn-venv test-full test-chaos-short test-embedded test-readme; do \
		echo "== $$step"; started=$$SECONDS; \
		if $(MAKE) --no-print-directory $$step 9>&-; then result=ok; else result=FAILED; failed="$$failed $$step"; fi; \
		echo "== $$step: $$result in $$((SECONDS - started))s"; \
	done; \
	if [ -n "$$failed" ]; then echo "== make test FAILED:$$failed" >&2; exit 1; fi; \
	echo "== make test: all steps passed"

test-full: install ## the whole pytest suite with the current environment (see services.sh env), chaos and README aside
	@$(call run_pytest,-m "not chaos and not readme" $(PYTEST_PARALLEL) $(PYTEST_ARGS))

test-chaos-short: install ## the short chaos pass (20 rounds, 4 faults) with the current environment
	@$(call run_pytest,-m chaos -s tests/chaos/test_chaos.py::test_chaos_short $(PYTEST_ARGS))

# Uses the services when they are up (and leaves them up); otherwise starts them and stops them after.
test-chaos: deps install ## chaos: 40 rounds under SIGKILLs on PostgreSQL+Redis+S3 (FEDPLANE_CHAOS_SEED=n replays)
	@$(hold_services_lock); \
	if $(SERVICES) status >/dev/null 2>&1; then echo "== using the running services"; \
	else trap '$(SERVICES) stop' EXIT; $(SERVICES) start 9>&-; fi; \
	eval "$$($(SERVICES) env)"; \
	export FEDPLANE_CHAOS_FULL=1; \
	$(call run_pytest,-m chaos -s tests/chaos/test_chaos.py::test_chaos_full $(PYTEST_ARGS))

# Uses the services when they are up (and leaves them up); otherwise starts them and stops them after.
test-fuzz: deps install ## schema fuzzing of a real controller, full budget (FEDPLANE_FUZZ_EXAMPLES per operation, default 200)
	@$(hold_services_lock); \
	if $(SERVICES) status >/dev/null 2>&1; then echo "== using the running services"; \
	else trap '$(SERVICES) stop' EXIT; $(SERVICES) start 9>&-; fi; \
	eval "$$($(SERVICES) env)"; \
	export FEDPLANE_FUZZ_EXAMPLES=$${FEDPLANE_FUZZ_EXAMPLES:-200}; \
	$(call run_pytest,-m fuzz tests/fuzz $(PYTEST_ARGS))

test-embedded: install ## storage/API tests on the embedded defaults (SQLite, files, filesystem broker)
	@unset DATABASE_URL S3_BUCKET CELERY_BROKER_URL REDIS_URL; \
	export FEDPLANE_VAR_DIR=$(CURDIR)/var/test-embedded; \
	$(call run_pytest,$(EMBEDDED_TESTS) $(PYTEST_PARALLEL) $(PYTEST_ARGS))

# Needs no services: the README's first command is the embedded demo, in a clone of its own.
test-readme: install ## the README's commands in order on a fresh clone of HEAD (make demo, make serve, CLI, Python)
	@unset DATABASE_URL S3_BUCKET CELERY_BROKER_URL REDIS_URL; \
	$(call run_pytest,-m readme -s tests/readme $(PYTEST_ARGS))

fedn-venv: ## create .fedn095, FEDn 0.9.5 in its own venv, for the compatibility tests
	bash scripts/fedn_venv.sh

test-compat: deps install ## tests against fedn==0.9.5 in its own venv (.fedn095)
	@if [ -f scripts/fedn_venv.sh ]; then bash scripts/fedn_venv.sh; \
	else echo "warning: scripts/fedn_venv.sh not found; using .fedn095 as it is" >&2; fi
	@$(hold_services_lock); \
	trap '$(SERVICES) stop' EXIT; \
	$(SERVICES) start 9>&-; \
	eval "$$($(SERVICES) env)"; \
	$(call run_pytest,-m compat $(PYTEST_ARGS))

# The figures of bench/ on the running services (never started or stopped here), one table with the
# machine's description in bench/RESULTS.md; each figure's output in var/bench/.
bench: install ## every benchmark figure at full size; the table, with the machine, in bench/RESULTS.md
	@$(SERVICES) status >/dev/null || { echo "error: the services are down (make services-start)" >&2; exit 1; }
	@eval "$$($(SERVICES) env)"; $(PY) bench/run.py $(ARGS)

bench-quick: install ## the benchmark figures at small sizes (under 5 minutes), table in bench/RESULTS.md
	@$(SERVICES) status >/dev/null || { echo "error: the services are down (make services-start)" >&2; exit 1; }
	@eval "$$($(SERVICES) env)"; $(PY) bench/run.py --quick $(ARGS)

# The digits example's experiments (examples/digits/README.md): a federation of real processes on the
# running services (never started or stopped here); each prints its table. ARGS go to the script.
experiment-stragglers: install ## digits, 6 clients (2 train 5x slower): time to 0.93 accuracy, sync fedavg vs async FedBuff
	@$(SERVICES) status >/dev/null || { echo "error: the services are down (make services-start)" >&2; exit 1; }
	@eval "$$($(SERVICES) env)"; $(PY) examples/digits/experiments.py stragglers $(ARGS)

experiment-privacy: install ## digits, 6 clients: accuracy after 8 rounds at ε = 1, 3, 8 (DP-FedAvg, adaptive clipping) and without DP
	@$(SERVICES) status >/dev/null || { echo "error: the services are down (make services-start)" >&2; exit 1; }
	@eval "$$($(SERVICES) env)"; $(PY) examples/digits/experiments.py privacy $(ARGS)

services-start: install ## start Redis, PostgreSQL and SeaweedFS S3 on loopback
	$(SERVICES) start

services-stop: ## stop the services
	$(SERVICES) stop

services-status: ## show which services run
	$(SERVICES) status

demo: install ## set up and train examples/digits on the embedded defaults (ARGS="--serve", "--auth", ...)
	FEDPLANE_DEMO=1 scripts/demo.sh $(ARGS)

serve: install ## migrate, collectstatic, then run the controller (gunicorn, http://127.0.0.1:8092), a Celery worker and a beat until Ctrl-C
	FEDPLANE_DEMO=1 $(PY) scripts/demo.py --serve-only $(ARGS)

clean: ## stop services, remove var/ and build leftovers (keeps .venv)
	-$(SERVICES) stop
	rm -rf var build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -path ./.fedn095 -prune -o -name __pycache__ -type d -print0 | \
		xargs -0 rm -rf
