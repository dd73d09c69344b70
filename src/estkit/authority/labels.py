"""EST labels (RFC 7030 §3.2.2): the name of the unlabelled path and what a label may be.

Apart from authority/profile.py, which gives each label its policy, so that operator
commands that only name labels (``cert list --label``) start without loading cryptography.
"""

from __future__ import annotations

import re

LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_LABEL = ""
"""The unlabelled path, /.well-known/est/ (``default`` on the command line)."""
