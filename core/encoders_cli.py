"""``landfuse encoders``: the pretrained encoders ``--init-encoders`` can start from."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import EXIT_OK

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``encoders`` to the ``landfuse`` parser."""
    listing = subparsers.add_parser(
        "encoders",
        help="list the pretrained encoders --init-encoders can start from",
        description="The catalogue of public pretrained encoder weights that fit the networks: "
        "key, encoder, bands, the input scaling they expect, licence, sha256 and URL.",
    )
    listing.set_defaults(func=_list_encoders)


def _list_encoders(args: argparse.Namespace) -> int:
    from ..models.encoders import ENCODER_WEIGHTS

    lines = []
    for row in ENCODER_WEIGHTS.values():
        lines += [
            f"{row.key}: {row.title}",
            f"    {row.encoder} for '{row.modality}' inputs ({' '.join(row.bands)}); expects "
            f"{row.normalisation}",
            f"    licence {row.licence}; sha256 {row.sha256}",
            f"    {row.url}",
        ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
