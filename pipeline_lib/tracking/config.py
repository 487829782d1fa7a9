"""Where a run is tracked."""

from __future__ import annotations

from pydantic import Field

from pipeline_lib.core.section import Section

class TrackingConfig(Section):
    uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite under $ALIGNFLOW_HOME")
    experiment: str = "alignflow"
    log_model_weights: bool = Field(
        False,
        description="copy each round's trained weights into MLflow's artifact store (default: the model's "
        "LoggedModel records its folder; a SmolLM2-size policy is 538 MB a round)",
    )
