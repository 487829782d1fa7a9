"""Prefect flows, one per recipe, and the `alignflow` command line."""

from tasks.settings import configure_prefect

# Must run before any flow module imports Prefect (see tasks/settings.py).
configure_prefect()
