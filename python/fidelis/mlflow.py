"""fidelis models in MLflow: a model directory as an MLflow ``pyfunc`` model, and registered
versions loaded back by URI.

``fidelis train`` with ``[mlflow] tracking_uri`` logs each run itself (parameters, metrics,
the model and its evaluation report) and registers a version; from Python,
:func:`log_model` logs a model directory into the active run. Either way the logged model is a
``pyfunc`` model whose data is the model directory and whose loader is this module, so

>>> model = mlflow.pyfunc.load_model("models:/churn@champion")  # doctest: +SKIP
>>> scores = model.predict(transactions_df, params={"as_of": "2024-10-01"})  # doctest: +SKIP

scores a pandas frame of transactions (``customer_id``, ``ts``, ``amount``) as ``fidelis
score`` does, and :func:`fidelis.load_model` and the Spark jobs' ``--model`` take
``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and ``runs:/RUN_ID/model`` URIs
(:func:`download`). The tracking server is MLflow's own setting: ``MLFLOW_TRACKING_URI`` or
``mlflow.set_tracking_uri``.
"""

from __future__ import annotations

import os
from typing import Any

#: The data directory inside a model logged by ``fidelis train``.
MODEL_DATA_DIR = "fidelis_model"

#: URI schemes :func:`download` resolves.
URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class FidelisPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict`` scores a transaction frame."""

    def __init__(self, model: Any):
        #: The :class:`fidelis.Model`.
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """The scores (a pandas DataFrame, the columns of ``scores.parquet``) of every customer
        of ``model_input`` eligible at ``params["as_of"]`` (default: the day after the last
        transaction)."""
        as_of = (params or {}).get("as_of") or None
        return self.model.score(model_input, as_of=as_of).to_pandas()


def _load_pyfunc(data_path: str) -> FidelisPyfunc:
    """MLflow's entry point for a ``pyfunc`` model whose ``loader_module`` is this module."""
    from . import load_model

    return FidelisPyfunc(load_model(data_path))


def signature() -> Any:
    """The model signature: the transaction log's contract columns in, ``as_of`` as a parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "customer_id"), ColSpec("datetime", "ts"), ColSpec("double", "amount")]),
        params=ParamSchema([ParamSpec("as_of", "string", "")]),
    )


def log_model(
    model_dir: str,
    name: str = "model",
    registered_model_name: str | None = None,
    input_example: Any = None,
) -> Any:
    """Log a fidelis model directory (``models/<id>``, or a models directory: its ``latest``)
    into the active MLflow run (one is started when none is) as a ``pyfunc`` model with
    :func:`signature` and ``input_example`` (a few transaction rows, e.g. a pandas frame);
    register it as a version of ``registered_model_name`` when given. Returns MLflow's
    ``ModelInfo`` (``model_uri`` loads it back)."""
    import mlflow

    from . import __version__, load_model

    model = load_model(model_dir)
    return mlflow.pyfunc.log_model(
        name=name,
        loader_module="fidelis.mlflow",
        data_path=model.model_dir,
        signature=signature(),
        input_example=input_example,
        registered_model_name=registered_model_name,
        pip_requirements=[f"fidelis=={__version__}"],
    )


def download(uri: str, dst_path: str | None = None) -> str:
    """The local model directory of a logged fidelis model: ``uri`` (``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``) downloaded from the tracking server
    (to ``dst_path``, default a temporary directory), then the ``pyfunc`` data directory its
    ``MLmodel`` names."""
    import mlflow
    import yaml

    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path)
    mlmodel = os.path.join(local, "MLmodel")
    if not os.path.isfile(mlmodel):
        raise ValueError(f"{uri} is not a logged model (no MLmodel file in {local})")
    with open(mlmodel, encoding="utf-8") as f:
        flavors = yaml.safe_load(f).get("flavors", {})
    data = flavors.get("python_function", {}).get("data")
    if flavors.get("python_function", {}).get("loader_module") != "fidelis.mlflow" or not data:
        raise ValueError(f"{uri} is not a fidelis model (its pyfunc loader is not fidelis.mlflow)")
    return os.path.join(local, str(data))
