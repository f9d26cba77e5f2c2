"""Make an archived processor state fit a fresh broker, table by table.

stream/restore.py re-seeds the changelog topics of a fresh embedded broker from the
state archived in ClickHouse (processor_state). Some state refers to the old broker's
offsets, which start at 0 again on the new one: `rebase` removes those references.

* visitors: `offsets` (last applied source offset per partition) is emptied, or the
  engine would skip every event of the new broker up to the old offsets
  (stream/journey/process.py skips events at or below the stored offset).
* windows, people: unchanged (no offsets inside; a person's devices are stored
  without offsets already).

Returns the value to produce, or None to leave the key out. Raises ValueError when the
value cannot be decoded (the caller skips and counts it). The lead extends this for new
tables: a table not listed here is restored unchanged.
"""

from __future__ import annotations

from stream.journey.state import decode_state, encode_state


def rebase(table: str, value: bytes) -> bytes | None:
    if table == "visitors":
        try:
            state = decode_state(value)
        except (ValueError, TypeError, IndexError) as exc:  # orjson's error is a ValueError
            raise ValueError(f"visitors: not a visitor state ({exc})") from exc
        if not state.offsets:
            return value
        state.offsets = {}
        return encode_state(state)
    return value
