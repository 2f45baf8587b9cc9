"""Files glmrun reads on a conversation file's behalf stay inside its suite folder.

Includes, local images, case files and `python:` hooks all name a file relative to the
conversation file's folder (the suite folder); none of them may reach beyond it: no absolute
path, no `..`, no symlink (itself or a folder on the way) that points outside. One check, used
by every reader, so a file in a pull request cannot make glmrun send `~/.ssh/id_rsa` to a model.
"""

from __future__ import annotations

import re
from pathlib import Path

from glmrun.errors import OutsideSuiteError


def inside_suite(root: Path, ref: str, what: str) -> Path:
    """The resolved path `ref` names inside `root`; OutsideSuiteError ("<what> '<ref>' is
    outside the suite folder") when it is absolute, climbs with `..` or resolves outside.

    The file need not exist: whether it does is the caller's question.
    """
    normal = ref.replace("\\", "/")
    pieces = [p for p in normal.split("/") if p not in ("", ".")]
    if (normal.startswith("/") or re.match(r"^[A-Za-z]:", normal) or ".." in pieces
            or not pieces or "\x00" in ref):
        raise OutsideSuiteError(f"{what} '{ref}' is outside the suite folder")
    base = root.resolve()
    try:
        resolved = base.joinpath(*pieces).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise OutsideSuiteError(f"{what} '{ref}' cannot be resolved (a symlink loop?)") from None
    if not resolved.is_relative_to(base):
        raise OutsideSuiteError(f"{what} '{ref}' is outside the suite folder")
    return resolved
