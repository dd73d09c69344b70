from tests.esthttp import PKCS10, b64, make_csr, request


def test_enroll_with_basic(est_server):
    password = est_server.add_user("smoke")
    _, der = make_csr("smoke-device")
    reply = request(
        est_server.est_url() + "/simpleenroll",
        est_server.ca_file,
        "POST",
        b64(der),
        PKCS10,
        user="smoke",
        password=password,
    )
    assert reply.status == 200, reply.text
    [cert] = reply.certificates()
    assert cert.subject.rfc4514_string() == "CN=smoke-device"
