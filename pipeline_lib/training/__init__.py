"""Fine-tuning on TRL / transformers Trainer: SFT (full or LoRA, merged), loss on completions only."""

from pipeline_lib.training.sft import train_sft

__all__ = ["train_sft"]
