# Both targets do all set-up from a fresh clone: a .venv in the repo root.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

run: $(STAMP)
	$(VENV)/bin/geoseg serve --host 127.0.0.1 --port $${PORT:-8000} --data-dir $${GEOSEG_SERVICE_DIR:-out/service}

clean:
	rm -rf $(VENV) out
