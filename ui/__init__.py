"""Gradio cross-modal retrieval demo."""
