"""The visitor's cart as a list of (product_id, sku, name, price, quantity) lines."""

from __future__ import annotations

from stream.journey.state import MAX_CART_LINES, CartLine


def add(cart: list[CartLine], line: CartLine) -> list[CartLine]:
    for i, old in enumerate(cart):
        if old[:2] == line[:2]:
            cart[i] = (*line[:4], old[4] + line[4])
            return cart
    if len(cart) < MAX_CART_LINES:
        cart.append(line)
    return cart


def remove(cart: list[CartLine], line: CartLine, quantity: int | None) -> list[CartLine]:
    """Take `quantity` units off the line (the whole line when None)."""
    out = []
    for old in cart:
        if old[:2] != line[:2]:
            out.append(old)
        elif quantity is not None and old[4] > quantity:
            out.append((*old[:4], old[4] - quantity))
    return out


def value(cart: list[CartLine]) -> int | float:
    # 0, not 0.0, for an empty cart: what the records always said (compiled code would
    # turn the int into a float if this said `float`)
    return round(sum(line[3] * line[4] for line in cart), 2) if cart else 0


def items(cart: list[CartLine]) -> int:
    return sum(line[4] for line in cart)


def as_records(cart: list[CartLine]) -> list[dict]:
    return [
        {"product_id": p, "sku": sku, "name": name, "price": price, "quantity": q}
        for p, sku, name, price, q in cart
    ]
