from greeting import GREETING, greet


def test_greet_uses_the_greeting():
    assert greet("canary") == f"{GREETING}, canary!"


def test_greeting_is_a_word():
    assert GREETING.isalpha()
