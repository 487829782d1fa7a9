"""Where a run is tracked."""

from __future__ import annotations

from pydantic import Field

from pipeline_lib.core.section import Section

class TrackingConfig(Section):
    uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite under $ALIGNFLOW_HOME")
    experiment: str = "alignflow"
