# Zaima: the two commands of the Quick start.
#   make demo   install into .venv, migrate, seed the demo store, serve it
#   make test   install into .venv (and Chromium for the browser tests), run the whole suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export ZAIMA_PORT ?= 8000

.PHONY: demo test install browser lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the Playwright tests, and a CJK font so Chinese renders.
browser:
	@if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi 'wenquanyi\|wqy'; then \
		echo "installing chromium and fonts-wqy-microhei (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; \
	fi

demo: install
	ZAIMA_ENV=demo $(BIN)/zaima demo

test: install browser
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check zaima tests bench

bench: install
	$(BIN)/python bench/orders.py

clean:
	rm -rf $(VENV) var .pytest_cache
