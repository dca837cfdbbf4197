"""Webhook signature scheme: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>."""

import hashlib
import hmac

import pytest

from recommender import signing

BODY = b'{"event_id": "e1"}'


def test_sign_matches_an_independent_hmac():
    # Expected value computed directly with hmac/hashlib, not through the module under test.
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signing.sign("s3cret", BODY, 1700000000) == f"t=1700000000,v1={expected}"


def test_valid_signature_passes_and_returns_timestamp():
    header = signing.sign("s3cret", BODY, 1700000000)
    assert signing.verify(header, BODY, ["s3cret"], tolerance_s=300, now=1700000100) == 1700000000


@pytest.mark.parametrize(
    "header, body, secrets, now, message",
    [
        (None, BODY, ["s3cret"], 1700000000, "missing"),
        ("v1=abc", BODY, ["s3cret"], 1700000000, "malformed"),
        ("t=1700000000", BODY, ["s3cret"], 1700000000, "malformed"),
        (signing.sign("wrong", BODY, 1700000000), BODY, ["s3cret"], 1700000000, "does not match"),
        (signing.sign("s3cret", BODY, 1700000000), BODY + b" ", ["s3cret"], 1700000000, "does not match"),
        (signing.sign("s3cret", BODY, 1700000000), BODY, ["s3cret"], 1700000301, "tolerance"),
        (signing.sign("s3cret", BODY, 1700000400), BODY, ["s3cret"], 1700000000, "tolerance"),
    ],
)
def test_bad_signatures_are_refused_with_a_reason(header, body, secrets, now, message):
    with pytest.raises(signing.SignatureError, match=message):
        signing.verify(header, body, secrets, tolerance_s=300, now=now)


def test_rotation_accepts_either_active_secret():
    old, new = signing.sign("old", BODY, 1700000000), signing.sign("new", BODY, 1700000000)
    for header in (old, new):
        signing.verify(header, BODY, ["new", "old"], tolerance_s=300, now=1700000000)
    with pytest.raises(signing.SignatureError):
        signing.verify(old, BODY, ["new"], tolerance_s=300, now=1700000000)
