"""Fine-tuning on TRL / transformers Trainer: SFT, DPO, SPIN, IFT and FIGA, with AdamW or the online merging
optimizers; full or LoRA (merged), loss on completions only."""

from pipeline_lib.training.objectives import train_model, train_sft

__all__ = ["train_model", "train_sft"]
