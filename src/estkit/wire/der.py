"""The few DER facts read or written by hand: where an element's contents lie, the elements of
a SEQUENCE, and the outer structure of a signed certificate or CRL.

Used where a library has no API for it: to sign a certificate's or a CRL's TBS bytes in a
PKCS#11 token and put the result together (authority/signing.py), to find the key in a CSR
exactly as sent (wire/csr.py), and to take a key identifier's bits from a
SubjectPublicKeyInfo already encoded (authority/issue.py).  Inputs have been parsed as strict
DER by cryptography first, so the lengths are well formed; single-byte tags only.
"""

from __future__ import annotations


def content_bounds(der: bytes, offset: int) -> tuple[int, int]:
    """(offset of the content, offset after it) of the DER element at offset."""
    length = der[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(der[start : start + size], "big")
        start += size
    return start, start + length


def subject_public_key(spki: bytes) -> bytes:
    """The key bits of a DER SubjectPublicKeyInfo, ``SEQUENCE { algorithm, BIT STRING }``
    (RFC 5280 §4.1), without the BIT STRING's unused-bits octet."""
    algorithm, _ = content_bounds(spki, 0)
    _, key = content_bounds(spki, algorithm)
    bits, end = content_bounds(spki, key)
    return spki[bits + 1 : end]


def der_elements(der: bytes) -> list[bytes]:
    """The encoded elements inside the outer SEQUENCE of der, each tag to end."""
    offset, end = content_bounds(der, 0)
    elements = []
    while offset < end:
        _, after = content_bounds(der, offset)
        elements.append(der[offset:after])
        offset = after
    return elements


def tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def assemble_signed(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    """``SEQUENCE { tbs, algorithm, BIT STRING signature }``: a certificate or a CRL."""
    return tlv(0x30, tbs + algorithm + tlv(0x03, b"\x00" + signature))
