"""dsocr: run DeepSeek-OCR locally and turn documents into clean, structured output."""
__version__ = "0.1.0"
