"""Command-line tools (installed as `alum.tools`): tokenizer training, corpus
preprocessing into megatron-core indexed datasets, checkpoint conversion."""
