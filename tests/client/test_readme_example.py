"""The library example in the README runs as written against a real server."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_library_example_enrolls(est_server, capsys):
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match is not None, "README has no python example"
    est_server.add_user("device-1", password="secret")
    code = match.group(1)
    code = code.replace("https://est.example.com", est_server.url)
    code = code.replace('"ca.pem"', repr(str(est_server.ca_file)))
    exec(compile(code, "README.md", "exec"), {})
    serial = int(capsys.readouterr().out.strip())
    store = est_server.store()
    try:
        record = store.certificate(format(serial, "x"))
    finally:
        store.close()
    assert record is not None
    assert (record.subject, record.label, record.requester) == (
        "CN=device-1",
        "iot",
        "user:device-1",
    )
