"""The key type names estkit uses everywhere (CLI flags, profiles, csrattrs hints).

Apart from wire/keytypes.py, which makes and inspects such keys, so that building the
command line does not load cryptography (every command, ``cert list`` too, builds it).
"""

from __future__ import annotations

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")
