"""Prefect tasks: thin wrappers over pipeline_lib, one file per stage family."""

from tasks.settings import configure_prefect

# Must run before any task module imports Prefect (see tasks/settings.py).
configure_prefect()
