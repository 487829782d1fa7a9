"""Modules that run inside the vLLM server process, in vLLM's own environment.

The server imports them by their own names (this folder is its PYTHONPATH), never through
``pipeline_lib``, so they import only vLLM and torch.
"""
