"""The base of every config section."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # A misspelt key fails instead of being ignored, on load and on assignment alike.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
