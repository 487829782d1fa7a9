"""Fine-tuning on TRL / transformers Trainer: SFT, DPO, SPIN, IFT and FIGA, with AdamW or the online merging
optimizers; full or LoRA (merged), loss on completions only.

Nothing is imported here: reading a recipe (``training.config``) or writing rows (``training.rows``) must not
load torch and TRL; ``training.objectives`` does.
"""
