# One command each: `make app` sets up and runs the app, `make test` sets up and runs the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: app test install install-dev train bench

install:
	$(PIP) install -q -r requirements.txt

install-dev:
	$(PIP) install -q -r requirements-dev.txt
	bash scripts/install_browser.sh

app: install
	$(PYTHON) -m streamlit run app.py

test: install-dev
	$(PYTHON) -m pytest -q

train: install
	$(PYTHON) train.py

bench: install-dev
	$(PYTHON) benchmarks/train_benchmark.py
	$(PYTHON) benchmarks/serve_benchmark.py
