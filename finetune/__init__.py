"""ALUM fine-tuning of Hugging Face BERT/RoBERTa models (installed as `alum.finetune`).

Submodules: `task_data` reads classification/regression files (GLUE TSV, jsonl, CSV,
parquet), `qa_data`/`qa_features`/`qa_postprocess`/`qa_metrics` do extractive QA (SQuAD
v1.1/v2.0, official EM/F1), `multiple_choice_data` reads SWAG/HellaSwag, `label_maps`
maps label sets between NLI datasets, `trainer` is the ALUM Trainer, `embedding_attack`
and `robustness` are the embedding-space PGD attack and the `alum-robustness` command.
"""
