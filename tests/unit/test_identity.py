from estkit.authority.identity import Identity


def test_describe_escapes_control_characters_from_certificate_names():
    identity = Identity(name="dev\x00ice\nfake log line", method="certificate", anchor="idevid")
    described = identity.describe()
    assert "\x00" not in described and "\n" not in described
    assert described == "cert:idevid:?:dev\\x00ice\\x0afake log line"


def test_describe_basic_user():
    assert Identity(name="alice", method="basic").describe() == "user:alice"
