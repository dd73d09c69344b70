"""CSR Attributes (RFC 7030 §4.5.2): what a server asks a client to put in its CSR.

``CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID`` where each item is either a bare OID
(e.g. challengePassword, a signature algorithm) or an Attribute with values (e.g. id-ecPublicKey
with the required curve).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc7030

from estkit.errors import MalformedDer


@dataclass(frozen=True)
class CsrAttribute:
    """An attribute the server wants, with its values (each one DER-encoded ASN.1 value)."""

    oid: str
    values: tuple[bytes, ...]


CsrAttrItem = str | CsrAttribute


def oid_value(dotted: str) -> bytes:
    """DER of an OBJECT IDENTIFIER, the usual value of a CSR attribute."""
    return bytes(encoder.encode(univ.ObjectIdentifier(dotted)))


def oid_from_value(der: bytes) -> str | None:
    """The dotted OID of a DER OBJECT IDENTIFIER attribute value; None for anything else."""
    try:
        value, rest = decoder.decode(der, asn1Spec=univ.ObjectIdentifier())
    except PyAsn1Error:
        return None
    return None if rest else str(value)


def encode_csrattrs(items: tuple[CsrAttrItem, ...]) -> bytes:
    """DER of a CsrAttrs sequence."""
    seq = rfc7030.CsrAttrs()
    seq.clear()  # an explicitly empty SEQUENCE OF is a valid (if pointless) CsrAttrs
    for index, item in enumerate(items):
        choice = rfc7030.AttrOrOID()
        if isinstance(item, str):
            choice["oid"] = univ.ObjectIdentifier(item)
        else:
            attribute = choice["attribute"]
            attribute["attrType"] = univ.ObjectIdentifier(item.oid)
            for value_index, value in enumerate(item.values):
                attribute["attrValues"][value_index] = univ.Any(value)
        seq[index] = choice
    return bytes(encoder.encode(seq))


def decode_csrattrs(der: bytes) -> tuple[CsrAttrItem, ...]:
    """Parse CsrAttrs; unknown OIDs are kept as they are, trailing bytes are an error."""
    try:
        seq, rest = decoder.decode(der, asn1Spec=rfc7030.CsrAttrs())
    except PyAsn1Error as exc:
        raise MalformedDer(f"not a DER CsrAttrs sequence: {exc}") from exc
    if rest:
        raise MalformedDer("CsrAttrs is followed by trailing bytes")
    items: list[CsrAttrItem] = []
    for choice in seq:
        name = choice.getName()
        if name == "oid":
            items.append(str(choice["oid"]))
        else:
            attribute = choice["attribute"]
            values = tuple(bytes(encoder.encode(v)) for v in attribute["attrValues"])
            items.append(CsrAttribute(str(attribute["attrType"]), values))
    return tuple(items)
