"""Make an archived processor state fit a fresh broker, table by table.

stream/restore.py re-seeds the changelog topics of a fresh embedded broker from the
state archived in ClickHouse (processor_state). Some state refers to the old broker's
offsets, which start at 0 again on the new one: `rebase` removes those references.

* visitors: `offsets` (last applied source offset per partition) is emptied, or the
  engine would skip every event of the new broker up to the old offsets
  (stream/journey/process.py skips events at or below the stored offset).
* windows: a partition's record (key `p|N`: its clock, publish count and the offset of
  the last tick applied) gets `tick_offset = -1`, or every tick of the new broker up to
  the old offset would be taken for a replay and ignored (stream/processor/engine.py
  on_tick); its clock and publish count stay (they only grow). Metric rows (pending
  increments) have no offsets: unchanged.
* people, and any table not listed here: unchanged (a person's devices are stored
  without offsets already).

Returns the value to produce, or None to leave the key out. Raises ValueError when the
value cannot be decoded (the caller skips and counts it). The lead extends this for new
tables.
"""

from __future__ import annotations

from stream.journey.state import decode_state, store_state


def rebase(table: str, value: bytes, key: bytes = b"") -> bytes | None:
    if table == "visitors":
        try:
            state = decode_state(value)
        except (ValueError, TypeError, IndexError) as exc:  # orjson's error is a ValueError
            raise ValueError(f"visitors: not a visitor state ({exc})") from exc
        if not state.offsets:
            return value
        state.offsets = {}
        return store_state(state)
    if table == "windows" and key.startswith(b"p|"):
        from stream.metrics.windows import PartitionRecord, is_partition_key

        if not is_partition_key(key):
            return value
        try:
            record = PartitionRecord.decode(value)
        except (ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"windows: not a partition record ({exc})") from exc
        if record.tick_offset < 0:
            return value
        record.tick_offset = -1
        return record.encode()
    return value
