"""The Jinja environment both emitters use (templates/ at the repository root, or packaged copy)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from hwgen import __version__
from hwgen.hw.names import comment_safe


def templates_dir() -> Path:
    """templates/ beside the package (editable install) or inside it (wheel)."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here.parent / "templates", here / "templates"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("hwgen templates/ directory not found next to the package")


def _hex(value: int, bits: int) -> str:
    """Two's-complement bit pattern of `value` in `bits` bits, as hex digits (no prefix)."""
    return format(value & ((1 << bits) - 1), f"0{(bits + 3) // 4}x")


@cache
def environment() -> jinja2.Environment:
    """StrictUndefined so a missing plan field is an error, never an empty string in the output."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["comment"] = comment_safe
    env.filters["hexbits"] = _hex
    env.globals["hwgen_version"] = __version__
    return env


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)
