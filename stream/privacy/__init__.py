"""Privacy: erasure of a person and the suppression list that keeps them erased.

subject.py       ids: validation, the salted hash, the salt
suppressions.py  the suppression list every process keeps (topic + follower)
rows.py          which ids a sink row or an event names (pure)
purge.py         the processor's hook: drop suppressed events, delete their state
erase.py         the erasure itself (resolve, suppress, delete, audit), in the API
"""
