# One command each: `make app` sets up and runs the app, `make test` sets up and runs the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# The bundle to serve (SKIN_WEIGHTS_DIR when set, as the app reads it).
WEIGHTS ?= $(or $(SKIN_WEIGHTS_DIR),weights)

.PHONY: app test install install-serve install-dev serving-model train bench

# Serving (the app, predict, evaluate): no TensorFlow.
install-serve:
	$(PIP) install -q -r requirements-serve.txt

# Training and building the served copy: TensorFlow, Keras, tf-keras-vis, and everything serving needs.
install:
	$(PIP) install -q -r requirements.txt

install-dev:
	$(PIP) install -q -r requirements-dev.txt
	bash scripts/install_browser.sh

# The app serves $(WEIGHTS)/model.tflite and head.npz, built from $(WEIGHTS)/model.keras
# (skin_model/serving/lite.py). `cli.lite --check` needs no TensorFlow: exit 0 = up to date, 1 = build it
# (missing, altered, stale or an older format: then requirements.txt is installed and the copy built),
# 2 = the bundle itself cannot be used (the message says why).
serving-model: install-serve
	@$(PYTHON) -m skin_model.cli.lite --check --weights $(WEIGHTS); status=$$?; \
	if [ $$status -eq 1 ]; then \
		$(PIP) install -q -r requirements.txt && $(PYTHON) -m skin_model.cli.lite --weights $(WEIGHTS); \
	else exit $$status; fi

app: serving-model
	SKIN_WEIGHTS_DIR="$(WEIGHTS)" $(PYTHON) -m streamlit run app.py

test: install-dev
	$(PYTHON) -m pytest -q

train: install
	$(PYTHON) train.py

bench: install-dev serving-model
	$(PYTHON) benchmarks/train_benchmark.py
	$(PYTHON) benchmarks/serve_benchmark.py
