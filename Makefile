# The two commands of the README: `make run` (the main job) and `make test`.
# Both do every set-up step themselves on a fresh machine (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ARGS ?=

.PHONY: setup run test lint services-up services-down bench clean

setup:
	@bash scripts/setup.sh

run: setup
	@$(VENV)/bin/citywatch run $(RUN_ARGS)

test: setup
	@$(VENV)/bin/ruff check citywatch ingest streams alerts tests bench
	@$(PY) -m pytest --durations=15

lint: setup
	@$(VENV)/bin/ruff check citywatch ingest streams alerts tests bench

services-up: setup
	@$(VENV)/bin/citywatch services up

services-down: setup
	@$(VENV)/bin/citywatch services down

clean:
	rm -rf .state build *.egg-info
