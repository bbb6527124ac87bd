"""Bundled data: the released config.json and tokenizer."""
