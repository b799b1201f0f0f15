"""Failure descriptions keep personal data and secrets out of records and logs."""

from __future__ import annotations

from saga.outcome import LIMIT, describe, redact


def test_redacts_phone_numbers_cards_and_secrets() -> None:
    text = redact("To +1 (500) 555-0006 with 4242 4242 4242 4242 using sk_test_abc123 and whsec_x9")
    assert "555" not in text and "4242" not in text and "sk_test" not in text and "whsec_" not in text
    assert "[phone]" in text and "[number]" in text and "[secret]" in text


def test_keeps_ids_and_codes() -> None:
    text = "twilio: 21211: saga 3f2a9c0e4b1d4e6f8a7b5c3d2e1f0a9b charge ch_123"
    assert redact(text) == text


def test_describe_names_the_type_and_is_bounded() -> None:
    assert describe(ValueError("x" * 2000)).startswith("ValueError: x")
    assert len(describe(ValueError("x" * 2000))) == LIMIT
