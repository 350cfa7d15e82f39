# The two commands of README.md. Both set up .venv first (scripts/setup.sh, idempotent).
.PHONY: setup test an4
setup:
	bash scripts/setup.sh
test: setup
	.venv/bin/python -m pytest -q tests
an4: setup
	cd recipes/an4 && PATH="$(CURDIR)/.venv/bin:$$PATH" ./run.sh
