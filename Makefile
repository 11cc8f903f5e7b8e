# The README's two commands live here: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
ESPNET_VERSION := 202511
# ci_sdr (imported by espnet2.bin.asr_inference) declares a git URL in an optional extra, which
# pip refuses for anything it fetches from PyPI; installed from the downloaded sdist, it is fine.
CI_SDR_URL := https://files.pythonhosted.org/packages/db/c0/1f9a358e31f8d329b1fe32dc05d9b1761472443e4f759771c21f60285198/ci_sdr-0.0.2.tar.gz
CI_SDR_SHA256 := 3f9d4c205b9b7c5c3239a90400b81f1f26ecb38484a46150d2677ff646a13465

.PHONY: install demo test test-all bench clean

install: $(STAMP)

# Re-installs only when the project's packaging changes.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# ESPnet is a test-only peer; --no-deps because one of its dependencies (ci_sdr)
	# declares a git URL that pip rejects. pyproject's [dev] lists what we need of its deps.
	$(PY) -m pip install --quiet --no-deps espnet==$(ESPNET_VERSION)
	$(PY) -c "import hashlib, sys, urllib.request; data = urllib.request.urlopen('$(CI_SDR_URL)').read(); \
	  assert hashlib.sha256(data).hexdigest() == '$(CI_SDR_SHA256)', 'ci_sdr sdist: sha256 mismatch'; \
	  open('$(VENV)/ci_sdr-0.0.2.tar.gz', 'wb').write(data)"
	$(PY) -m pip install --quiet --no-deps $(VENV)/ci_sdr-0.0.2.tar.gz
	touch $(STAMP)

# The digits recipe end to end: synthetic speech -> Conformer CTC/attention -> WER table.
# Re-running resumes (a finished run just re-decodes and prints its table again).
demo: install
	cd egs/digits/asr && start=$$SECONDS && ./run.sh && \
	  echo "make demo: egs/digits/asr/run.sh took $$((SECONDS - start)) s; table in egs/digits/asr/exp/conformer_fast_demo/RESULTS.md"

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
