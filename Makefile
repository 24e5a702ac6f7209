# One command per action. Each installs what it needs into .venv first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-pools bench-flows peers

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job: audit the standard library with a worker, embedded server
	$(PY) -m examples.stdlib_audit.demo

test: $(STAMP)  ## the test suite, against the system Redis and the embedded server
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m mypy
	$(VENV)/bin/ruff check taskflow tests examples benchmarks

bench: $(STAMP)  ## throughput on a private Redis: enqueue, drain, commands and CPU per job
	$(PY) benchmarks/throughput.py

bench-pools: $(STAMP)  ## no-op jobs/s in each pool at concurrency 8: the cost of isolation
	$(PY) benchmarks/pools.py

bench-flows: $(STAMP)  ## add and resolve flows of 1,000 and 10,000 children
	$(PY) benchmarks/flows.py

peers: $(STAMP)  ## taskflow beside Node BullMQ and taskiq, in one run
	cd ../shared/bench/peers && TASKFLOW_PIP="-e $(CURDIR)" \
		TASKFLOW_PEER_SCRIPT=$(CURDIR)/benchmarks/peer_taskflow.py \
		python3 run.py --peers taskflow,bullmq_node,taskiq --out /tmp/peers-taskflow.json
