"""SEFT's pipeline steps over files: reviser data, revising policy samples, choosing training targets.

The decision labels, the reviser's template and its output parsing live in
``pipeline_lib.revision``; this package applies them to stage inputs and
outputs (Parquet files) so that the Prefect tasks stay thin.
"""
