# One command each: `make app` sets up and runs the app, `make test` sets up and runs the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: app test install install-dev serving-model train bench

install:
	$(PIP) install -q -r requirements.txt

install-dev:
	$(PIP) install -q -r requirements-dev.txt
	bash scripts/install_browser.sh

# The app serves a LiteRT copy of weights/model.keras (skin_model/serving/lite.py): build it now, not on the first start.
serving-model: install
	$(PYTHON) -m skin_model.cli.lite --weights weights

app: serving-model
	$(PYTHON) -m streamlit run app.py

test: install-dev
	$(PYTHON) -m pytest -q

train: install
	$(PYTHON) train.py

bench: install-dev serving-model
	$(PYTHON) benchmarks/train_benchmark.py
	$(PYTHON) benchmarks/serve_benchmark.py
