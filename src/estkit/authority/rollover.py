"""CA key rollover (RFC 7030 §4.1.3, after RFC 4210 §4.4): the certificates a new generation needs.

An issuing CA rollover is a new issuing CA under the same root.  A root rollover is a new
self-signed root (NewWithNew) plus the two link certificates that let relying parties who
trust only one of the roots validate chains under the other: OldWithNew (the old root's key
certified by the new root) and NewWithOld (the new root's key certified by the old root),
both valid until the old root expires.  This module only builds certificates; where they are
kept and when they are used is the authority's registry's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from estkit.authority.pki import ISSUING_VALIDITY, ROOT_VALIDITY, ca_certificate

_GENERATION = re.compile(r"^(.*?)(?: G(\d+))?$")


def next_generation_name(name: x509.Name) -> x509.Name:
    """The subject of the next generation: 'X Issuing CA' -> 'X Issuing CA G2' -> '... G3'.

    A new name keeps chain building unambiguous for relying parties that match by name.
    """
    attributes = []
    for attribute in name:
        if attribute.oid == NameOID.COMMON_NAME and isinstance(attribute.value, str):
            match = _GENERATION.match(attribute.value)
            assert match is not None  # the pattern matches every string
            generation = int(match.group(2) or 1) + 1
            attribute = x509.NameAttribute(NameOID.COMMON_NAME, f"{match.group(1)} G{generation}")
        attributes.append(attribute)
    return x509.Name(attributes)


@dataclass(frozen=True)
class CaGeneration:
    """A new CA certificate and its key."""

    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


def roll_issuing(
    root: x509.Certificate,
    root_key: CertificateIssuerPrivateKeyTypes,
    current: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
) -> CaGeneration:
    """A new issuing CA for ``key`` (a new key, in a file or a token) under root, named after
    the current one, never outliving the root."""
    not_after = min(now + ISSUING_VALIDITY, root.not_valid_after_utc)
    certificate = ca_certificate(
        next_generation_name(current.subject),
        key.public_key(),
        root.subject,
        root_key,
        not_after,
        0,
        now,
    )
    return CaGeneration(certificate, key)


@dataclass(frozen=True)
class RootRollover:
    """NewWithNew (with its key) and the two link certificates of a root key update."""

    new_root: CaGeneration
    old_with_new: x509.Certificate
    new_with_old: x509.Certificate


def roll_root(
    old_root: x509.Certificate,
    old_root_key: CertificateIssuerPrivateKeyTypes,
    key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
) -> RootRollover:
    """A new root for ``key`` and its links to the old one (both links end when the old root
    does)."""
    name = next_generation_name(old_root.subject)
    new_with_new = ca_certificate(name, key.public_key(), name, key, now + ROOT_VALIDITY, None, now)
    overlap_end = old_root.not_valid_after_utc
    old_with_new = ca_certificate(
        old_root.subject, old_root_key.public_key(), name, key, overlap_end, None, now
    )
    new_with_old = ca_certificate(
        name, key.public_key(), old_root.subject, old_root_key, overlap_end, None, now
    )
    return RootRollover(CaGeneration(new_with_new, key), old_with_new, new_with_old)
