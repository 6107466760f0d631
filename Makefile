# Two commands do all set-up: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cbamlab-installed

.PHONY: demo test docs bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cbamlab native
	$(VENV)/bin/cbamlab compare --out runs/demo
	$(VENV)/bin/cbamlab explain runs/demo --n 32 --out runs/demo/explain

test: $(STAMP)
	$(VENV)/bin/cbamlab native
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link, a missing page or an API
# reference that no longer resolves fails the build. tests/test_docs.py builds it too, so CI checks it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_folder.py
	-$(PY) -m pip install -q -e '.[bench]'  # timm, for its CBAM (without it: no timm rows)
	$(PY) benchmarks/bench_attention.py
	$(PY) benchmarks/attention_limits.py

clean:
	rm -rf runs site .pytest_cache
