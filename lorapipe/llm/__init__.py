"""Teachers and judges: one protocol (llm.base.LLM), three kinds (openai, local, python)."""
