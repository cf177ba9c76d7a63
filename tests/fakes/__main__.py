"""``python -m tests.fakes``: serve the fake OpenAI endpoint until killed (see openai_server.main)."""

from tests.fakes.openai_server import main

main()
