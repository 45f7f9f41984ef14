# make targets for the train part
# TrashNet-style data: one folder per class. Point DATA_DIR at your copy, e.g.
#   make train DATA_DIR=../shared/data/trashnet
DATA_DIR ?= data/trashnet
TRAIN_ARGS ?=
MLFLOW_PORT ?= 5000
CHAMPION ?= models@production
CHALLENGER ?= models@candidate
COMPARE_ARGS ?=
.PHONY: train train-quick compare mlflow-ui

train: $(STAMP)  ## train the default config (Lite0, TrashNet + drinking-waste, ~12 min on 2 CPU cores); a challenger that wins is published as candidate
	$(PY) -m training run --config training/configs/default.yaml data.dir=$(DATA_DIR) $(TRAIN_ARGS)

train-quick: $(STAMP)  ## a quick end-to-end training run (<10 min), publishes nothing
	$(PY) -m training run --config training/configs/quick.yaml data.dir=$(DATA_DIR) $(TRAIN_ARGS)

compare: $(STAMP)  ## champion vs challenger per source (CHAMPION=, CHALLENGER= registry URIs; COMPARE_ARGS)
	$(PY) -m training compare --champion $(CHAMPION) --challenger $(CHALLENGER) $(COMPARE_ARGS)

mlflow-ui: $(STAMP)  ## serve the MLflow UI on the local store (mlruns.db, mlruns/) at :$(MLFLOW_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns.db --default-artifact-root ./mlruns --port $(MLFLOW_PORT)
