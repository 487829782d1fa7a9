"""Model provisioning: references -> local HF folders, GGUF conversion, the tiny test model, loading.

Names load on first use (``pipeline_lib.models.resolve_model``): the recipe's ``model`` section
(``models.config``) is read by every command, and must not load torch with it.
"""

from pipeline_lib.core.lazy import lazy_attributes

_WHERE = {
    "convert_gguf": "gguf_convert",
    "load_gguf_tokenizer": "gguf_convert",
    "count_parameters": "loading",
    "load_causal_lm": "loading",
    "load_tokenizer": "loading",
    "use_distinct_pad": "loading",
    "ALIASES": "registry",
    "check_reference": "registry",
    "describe_models": "registry",
    "pull": "registry",
    "resolve_model": "registry",
    "greedy_reply": "smollm2",
    "smollm2_gguf": "smollm2",
    "build_tiny_llama": "tiny",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
