"""The DeepSeek-OCR network in PyTorch; knows nothing of files, documents or the CLI."""
