# The commands of README.md. All set up .venv first (scripts/setup.sh, idempotent).
.PHONY: setup test an4 an4-gpu-archive
setup:
	bash scripts/setup.sh
test: setup
	.venv/bin/python -m pytest -q tests
an4: setup
	cd recipes/an4 && PATH="$(CURDIR)/.venv/bin:$$PATH" ./run.sh
# After `make an4`: AN4's fbank stores + tri1 alignments for bench/gpu_check.sh (about 20 MB).
an4-gpu-archive: setup
	.venv/bin/python bench/gpu_archive.py --data recipes/an4/data --exp recipes/an4/exp an4_gpu.tar.gz
