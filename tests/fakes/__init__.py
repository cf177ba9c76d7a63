"""Test doubles shared by every team's tests (import as ``from tests.fakes import FakeOpenAI``)."""

from tests.fakes.openai_server import FAULTS, FakeOpenAI, LogEntry, echo

__all__ = ["FAULTS", "FakeOpenAI", "LogEntry", "echo"]
