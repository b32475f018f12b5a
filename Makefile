# Two commands for a newcomer: `make run` and `make test`.
# Each makes and fills .venv on first use (and again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test clean

run: $(STAMP)
	$(VENV)/bin/streamgen stream < samples/inputs.txt

test: $(STAMP)
	$(VENV)/bin/pytest

# pip's and setuptools' chatter goes to $(VENV)/install.log; shown on failure.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing streamgen and its dependencies into $(VENV) (log: $(VENV)/install.log) ..."
	@( $(VENV)/bin/python -m pip install --upgrade pip \
	   && $(VENV)/bin/python -m pip install -e ".[test]" ) > $(VENV)/install.log 2>&1 \
	  || { tail -n 30 $(VENV)/install.log; echo "make: installing into $(VENV) failed; see $(VENV)/install.log" >&2; exit 1; }
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
