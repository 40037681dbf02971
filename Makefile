# The two commands of the README: `make dev` (start the stack) and `make test` (run the tests).
# Both install what they need into .venv first; re-installing happens only when pyproject changes.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: install dev test test-fast lint bench chaos fuzz soak audit clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

install: $(INSTALLED)

dev: $(INSTALLED)
	$(VENV)/bin/headrace dev

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

# Test files run on TEST_PROCESSES processes, each file's tests on one (they share its stacks).
# The slowest tests are listed at the end: what to look at when the run grows.
TEST_PROCESSES ?= 2

test: lint
	$(VENV)/bin/python -m pytest -n $(TEST_PROCESSES) --dist loadfile --durations 15

# The tests that start no process and open no port (tests/unit).
test-fast: $(INSTALLED)
	$(VENV)/bin/python -m pytest tests/unit

# The benchmark of README "Performance": engine limit vs headrace vs a naive worker (~15 min).
bench: $(INSTALLED)
	$(VENV)/bin/python -m pip install --quiet -e ".[bench]"
	$(VENV)/bin/python -m bench

# Worker kills, a SIGTERM and a frozen worker under load, then an audit of every job and stream
# (~8 min for 1,000 jobs; README "Tests"). `make test` runs a short one (80 jobs, 3 kills).
# Options: make chaos ARGS="--jobs 1000 --kills 10 --zombie".
chaos: $(INSTALLED)
	$(VENV)/bin/python -m tests.suites.chaos $(ARGS)

# schemathesis over openapi.json, hostile HTTP requests and WebSocket frames (~5 min; README
# "Tests"). `make test` runs a bounded one (3 schemathesis examples per operation).
# Options: make fuzz ARGS="--max-examples 20 --streams 10".
fuzz: $(INSTALLED)
	$(VENV)/bin/python -m tests.suites.fuzz $(ARGS)

# Steady light load with the RSS of every process of the stack sampled; growth per hour per
# process (30 min by default; README "Tests"). Not part of `make test`. Options:
# make soak ARGS="--minutes 60 --rate 4".
soak: $(INSTALLED)
	$(VENV)/bin/python -m tests.suites.soak $(ARGS)

# checkov on what AWS deploys: template.yaml through the SAM transform (infra/sam_transform.py),
# every check but those infra/checkov-skips.txt lists with a reason. checkov pins its own boto3,
# so it gets a virtual environment of its own.
AUDIT_VENV := .venv-audit
$(AUDIT_VENV)/.installed:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AUDIT_VENV)/bin/python -m pip install --quiet "checkov==3.3.*"
	touch $@

audit: $(INSTALLED) $(AUDIT_VENV)/.installed
	mkdir -p build
	$(VENV)/bin/python -m infra.sam_transform --output build/template.json
	$(AUDIT_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation \
		--file build/template.json \
		--skip-check "$$(grep -o '^CKV[A-Z0-9_]*' infra/checkov-skips.txt | paste -sd, -)"

clean:
	rm -rf $(VENV) $(AUDIT_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
