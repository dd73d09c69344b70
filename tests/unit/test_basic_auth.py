import base64

import pytest

from estkit.errors import BadRequest
from estkit.server.auth import BasicCredentials, parse_basic


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_absent_and_empty_credentials_mean_none():
    assert parse_basic(None) is None
    assert parse_basic(basic(b":")) is None
    assert parse_basic("Basic Og==") is None


def test_parses_user_and_password_with_colons_in_password():
    assert parse_basic(basic(b"alice:pa:ss")) == BasicCredentials("alice", "pa:ss")
    assert parse_basic("basic " + base64.b64encode(b"bob:x").decode()).user == "bob"


def test_utf8_credentials():
    assert parse_basic(basic("jörg:pässword".encode())) == BasicCredentials("jörg", "pässword")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Bearer abc", "unsupported Authorization scheme"),
        ("Basic !!!", "not base64"),
        (basic(b"no-colon"), "no ':'"),
        (basic(b"alice:pass\x00word"), "NUL"),
        (basic(b"alice:pass\nword"), "control character"),
    ],
)
def test_malformed_credentials_are_bad_requests(header, reason):
    with pytest.raises(BadRequest, match=reason):
        parse_basic(header)


def test_repr_hides_the_password():
    assert "secret" not in repr(BasicCredentials("alice", "secret"))
