"""Where the reference drafters that ship with the project are, in any install.

git holds them in the repository's ``drafters/`` folder, which an editable install (``pip install -e .``, what
``setup.sh`` does) reaches from the source tree; a regular install does not copy them into site-packages (they
are weights, 57 MB), so there they are found through ``SLIMSPEC_DRAFTERS`` or a ``drafters/`` folder in the
working directory, or not at all, and the caller says where to get them."""

from __future__ import annotations

import os
from pathlib import Path

from slimspec import DRAFTER_FILES

SHIPPED = {"gemma3-270m": "slimspec-gemma3-270m-d8"}  # target -> the drafter folder's name under drafters/


def drafter_roots() -> list:
    """The folders searched for shipped drafters, in order: $SLIMSPEC_DRAFTERS, the source tree's drafters/ (an
    editable install or a checkout), ./drafters."""
    roots = [Path(os.environ["SLIMSPEC_DRAFTERS"])] if os.environ.get("SLIMSPEC_DRAFTERS") else []
    return roots + [Path(__file__).resolve().parents[1] / "drafters", Path.cwd() / "drafters"]


def shipped_drafter(target_name: str):
    """The complete shipped drafter folder for ``target_name``, or None where this install has none."""
    name = SHIPPED.get(target_name)
    for root in drafter_roots() if name else []:
        folder = root / name
        if all((folder / f).exists() for f in DRAFTER_FILES):
            return folder
    return None


def shipped_or_exit(target_name: str, prog: str) -> Path:
    """``shipped_drafter`` for a command's default drafter, or SystemExit naming ``prog`` and where to get one."""
    folder = shipped_drafter(target_name)
    if folder is None:
        raise SystemExit(f"{prog}: {where_to_get(target_name)} (--drafter FOLDER)")
    return folder


def where_to_get(target_name: str) -> str:
    """What to do when ``shipped_drafter`` found nothing, as a sentence."""
    name = SHIPPED.get(target_name, "<drafter>")
    searched = ", ".join(str(root) for root in drafter_roots())
    return (f"no shipped drafter {name} in this install (searched {searched}): it ships in the repository's "
            f"drafters/ folder, which an editable install from a clone finds (bash setup.sh); or point "
            f"SLIMSPEC_DRAFTERS at a folder holding {name}/; or pass a drafter folder explicitly.")
