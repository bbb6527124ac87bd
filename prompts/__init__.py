"""Prompt files shipped with dsocr (installed as dsocr_cli.prompt_files)."""
