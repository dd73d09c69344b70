from tests.esthttp import enroll_basic, make_csr


def test_enroll_with_basic(est_server):
    password = est_server.add_user("smoke")
    _, der = make_csr("smoke-device")
    reply = enroll_basic(est_server, der, None, "smoke", password)
    assert reply.status == 200, reply.text
    [cert] = reply.certificates()
    assert cert.subject.rfc4514_string() == "CN=smoke-device"
