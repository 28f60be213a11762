"""Heads that read a frozen tokenizer's codes: captioning, VQA, retrieval and masked words."""
