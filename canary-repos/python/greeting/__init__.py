"""Canary Lab sample repo: a greeting module tested with pytest."""

# The string a canary edit task changes.
GREETING = "Hello"


def greet(name: str) -> str:
    """The function a canary edit task updates."""
    return f"{GREETING}, {name}!"
