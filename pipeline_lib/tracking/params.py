"""The validated config as MLflow params, and whole as ``config.yaml``."""

import json
from collections.abc import Mapping
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from pipeline_lib.tracking.names import sanitize_metric_name
from pipeline_lib.tracking.writing import log_batches, resolve_run_id

CONFIG_ARTIFACT = "config.yaml"


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    """``{"train": {"lr": 1e-5}}`` -> ``{"train.lr": "1e-05"}``, within MLflow's limits.

    Lists are JSON, None is ``"None"``. Keys are sanitised like metric names;
    values over MLflow's limit are cut and end with ``…[+N chars]`` (the
    complete config goes to ``config.yaml``, see :func:`log_config`).
    """
    flat: dict[str, str] = {}
    for key, value in _plain(config).items():
        _flatten_into(flat, str(key), value)
    return flat


def log_config(config: Mapping[str, Any], run_id: str | None = None) -> None:
    """Log ``config`` as params and as the ``config.yaml`` artifact."""
    run_id = resolve_run_id(run_id)
    log_batches(run_id, params=[Param(key, value) for key, value in flatten_params(config).items()])
    text = yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True)
    MlflowClient().log_text(run_id, text, CONFIG_ARTIFACT)


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """Only JSON types: paths, enums and the like become their text."""
    return json.loads(json.dumps(dict(config), default=str))


def _flatten_into(flat: dict[str, str], dotted: str, value: Any) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten_into(flat, f"{dotted}.{key}", item)
        return
    key = sanitize_metric_name(dotted)
    if key in flat:
        raise ValueError(f"config keys collide as MLflow param {key!r} (from {dotted!r})")
    flat[key] = _truncate(_as_text(value))


def _as_text(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _truncate(text: str) -> str:
    if len(text) <= MAX_PARAM_VAL_LENGTH:
        return text
    # The marker for len(text) is at least as long as the final one, so the
    # result always fits.
    keep = MAX_PARAM_VAL_LENGTH - len(f"…[+{len(text)} chars]")
    return f"{text[:keep]}…[+{len(text) - keep} chars]"
