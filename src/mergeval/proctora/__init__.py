"""Proctora, the LLM judge: its prompt, its settings, its backends and its verdict parser."""
