"""alignflow's library layer: plain functions over paths and configs, no Prefect."""

__version__ = "0.1.0"
