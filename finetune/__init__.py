"""ALUM fine-tuning of Hugging Face BERT/RoBERTa models (installed as `alum.finetune`).

Submodules: `task_data` reads train/eval files (GLUE TSV, jsonl, CSV, parquet),
`metrics` computes accuracy, macro-F1, Pearson/Spearman and MSE.
"""
