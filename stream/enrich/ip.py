"""IP addresses: anonymized before they are stored (GDPR: an IP is personal data).

IPv4 keeps its /24 (last octet zeroed), IPv6 its /48 (the site prefix): enough
for coarse geography, not enough to point at a household. Anything that is not
an address becomes "".
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

_V4_KEEP = (2**32 - 1) ^ (2**8 - 1)  # /24
_V6_KEEP = (2**128 - 1) ^ (2**80 - 1)  # /48


@lru_cache(maxsize=8192)
def anonymize_ip(raw: str) -> str:
    """'203.0.113.42' -> '203.0.113.0'; '2001:db8:abcd:12::1' -> '2001:db8:abcd::'; junk -> ''."""
    address = _parse(raw)
    if address is None:
        return ""
    if address.version == 4:
        return str(IPv4Address(int(address) & _V4_KEEP))
    return str(IPv6Address(int(address) & _V6_KEEP))


@lru_cache(maxsize=8192)
def normalize_ip(raw: str) -> str:
    """The address in canonical form, unanonymized; junk -> ''."""
    address = _parse(raw)
    return "" if address is None else str(address)


def _parse(raw: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(raw.strip())
    except (ValueError, AttributeError):
        return None
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:1.2.3.4 from dual-stack sockets is IPv4
            return address.ipv4_mapped
        if address.scope_id:  # fe80::1%eth0: the zone names our interface, not the visitor
            return IPv6Address(int(address))
    return address
