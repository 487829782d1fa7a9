"""Model provisioning: references -> local HF folders, GGUF conversion, the tiny test model, loading."""

from pipeline_lib.models.gguf_convert import convert_gguf, load_gguf_tokenizer
from pipeline_lib.models.loading import count_parameters, load_causal_lm, load_tokenizer, use_distinct_pad
from pipeline_lib.models.registry import ALIASES, check_reference, describe_models, pull, resolve_model
from pipeline_lib.models.smollm2 import greedy_reply, smollm2_gguf
from pipeline_lib.models.tiny import build_tiny_llama

__all__ = [
    "ALIASES",
    "build_tiny_llama",
    "check_reference",
    "convert_gguf",
    "count_parameters",
    "describe_models",
    "greedy_reply",
    "load_causal_lm",
    "load_gguf_tokenizer",
    "load_tokenizer",
    "pull",
    "resolve_model",
    "smollm2_gguf",
    "use_distinct_pad",
]
