"""Dimension cells: the canonical text of one, as stored in `Observation.dims_key`.

Both the write path (which fills the column) and the roll-up (which reads every cell a
measure can have) need the same text, so it lives here rather than in either.
"""


def dims_key(dims: dict[str, str]) -> str:
    """Canonical text of a dimension cell: "age=65+|sex=female" (sorted by name), "" if none."""
    return "|".join(f"{name}={dims[name]}" for name in sorted(dims))


__all__ = ["dims_key"]
