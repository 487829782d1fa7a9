"""Give a model folder a chat template of the recipe's choosing (``model.chat_template``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipeline_lib.core.errors import UserError

TOKENIZER_CONFIG = "tokenizer_config.json"


def template_text(value: str) -> str:
    """The template itself: ``value``, or the contents of the file it names."""
    path = Path(value).expanduser()
    if "{" not in value and path.is_file():
        return path.read_text()
    if "{" not in value:
        raise UserError(f"model.chat_template: {value!r} is neither a Jinja template nor an existing file")
    return value


def write_with_template(model: Path, template: str, out: Path) -> dict:
    """``out`` = ``model``'s files (hard links where the filesystem allows) with ``template`` in its tokenizer config."""
    for file in model.iterdir():
        if file.name == TOKENIZER_CONFIG or not file.is_file():
            continue
        try:
            os.link(file, out / file.name)
        except OSError:
            shutil.copy2(file, out / file.name)
    config_file = model / TOKENIZER_CONFIG
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config["chat_template"] = template
    (out / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2))
    # A template file beside the config (newer transformers) would take precedence over ours.
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return {"source_model": str(model)}
