# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
# torch must come from the package index (PIP_FIND_LINKS=' '): torchvision's wheels are built against
# the index's CUDA torch and fail to import with a local CPU-only build of the same version.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segzoo-installed

.PHONY: install demo test test-slow typecheck lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	PIP_FIND_LINKS=' ' $(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segzoo train --model vgg16-fcn8s

# the type check first (seconds; pyproject's [tool.mypy] states its strictness), then the quick suite (about
# 2 minutes on 2 cores: one pytest-xdist worker per core, each given its share of the threads in tests/conftest.py);
# test-slow runs the end-to-end tests marked slow (subprocesses, signals, DDP, the wheel), one at a time
test: typecheck
	$(PY) -m pytest -q -m "not slow" -n auto --dist worksteal

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

typecheck: $(STAMP)
	$(PY) -m mypy

lint: $(STAMP)
	$(VENV)/bin/ruff check segzoo plugins tests bench

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache
