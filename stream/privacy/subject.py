"""The subject of an erasure: a visitor's anonymous id or a person's user id.

Only a salted hash of an id is ever stored for erasure (suppression list, audit):
keyed BLAKE2b, so without the salt nobody can test a guessed id against the list.
The salt is CLICKSTREAM_PRIVACY_SALT or, when unset, a random one created once in
the data directory (`privacy-salt`), which every local process of the pipeline shares.
Several hosts must share one salt: set the variable.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable

from stream.config import Settings, SettingsError

MAX_ID_CHARS = 512
SALT_FILE = "privacy-salt"
MIN_SALT_BYTES = 16


class IdError(ValueError):
    """An id that cannot be erased as given; the message says why."""


def validate_id(raw: str) -> str:
    """The id as stored by the pipeline, or IdError: empty, too long, control chars."""
    if not raw or not raw.strip():
        raise IdError("the id is empty")
    if len(raw) > MAX_ID_CHARS:
        raise IdError(f"the id is longer than {MAX_ID_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise IdError("the id holds control characters")
    return raw


def subject_hash(subject_id: str, salt: bytes) -> str:
    """Keyed BLAKE2b of the id, 32 hex digits: what the suppression list holds."""
    return hashlib.blake2b(subject_id.encode(), key=salt[:64], digest_size=16).hexdigest()


def load_salt(settings: Settings) -> bytes:
    """The configured salt, else the data directory's (created on first use)."""
    if settings.privacy_salt:
        return settings.privacy_salt.encode()
    path = settings.data_dir / SALT_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under another name, then linked: when processes race, one link wins
    # and every process reads the same complete salt.
    tmp = path.with_name(f".{SALT_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read(path)


def _read(path) -> bytes:
    salt = path.read_text().strip().encode()
    if len(salt) < MIN_SALT_BYTES:
        raise SettingsError(
            f"{path} holds no usable salt; delete it or set CLICKSTREAM_PRIVACY_SALT"
        )
    return salt


class Matcher:
    """Does an id belong to a suppressed subject? Hashes are cached per id (a hash costs
    about a microsecond; a look-up a twentieth of that), and the cache is bounded."""

    MAX_CACHED = 200_000

    def __init__(self, salt: bytes, hashes: Iterable[str] = ()):
        self.salt = salt
        self.hashes: dict[str, str] = dict.fromkeys(hashes, "")  # hash -> erasure id
        self._cache: dict[str, bool] = {}

    def add(self, digest: str, erasure_id: str = "") -> bool:
        """Take a hash in; True when it is new."""
        new = digest not in self.hashes
        self.hashes[digest] = erasure_id
        if new:
            self._cache.clear()
        return new

    def __len__(self) -> int:
        return len(self.hashes)

    def hash(self, subject_id: str) -> str:
        return subject_hash(subject_id, self.salt)

    def suppressed(self, subject_id: str) -> bool:
        if not self.hashes or not subject_id:
            return False
        hit = self._cache.get(subject_id)
        if hit is None:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            hit = self._cache[subject_id] = self.hash(subject_id) in self.hashes
        return hit

    def any(self, ids: Iterable[str]) -> bool:
        """Is any of `ids` suppressed? (The sink asks for every row: kept tight.)"""
        if not self.hashes:
            return False
        cache = self._cache
        for subject_id in ids:
            if subject_id:
                hit = cache.get(subject_id)
                if hit is None:
                    hit = self.suppressed(subject_id)
                if hit:
                    return True
        return False
