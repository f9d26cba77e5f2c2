"""React to cart-abandoned triggers: the few lines an e-mail or push automation needs.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/cart_abandoned_emailer.py

Delivery is at least once: a trigger can arrive twice after a crash or rebalance, with
the same `idempotency_key`. Remember the keys you acted on (here in memory; in
production in your own store, e.g. a unique index) and skip repeats.
"""

import asyncio
import os

import orjson
from aiokafka import AIOKafkaConsumer


async def main() -> None:
    consumer = AIOKafkaConsumer(
        "journey.triggers",
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        group_id="cart-abandoned-emailer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        async for message in consumer:
            trigger = orjson.loads(message.value)
            if trigger["trigger"] == "cart_abandoned" and trigger["idempotency_key"] not in seen:
                seen.add(trigger["idempotency_key"])
                items = ", ".join(
                    f"{i['quantity']} x {i['name'] or i['product_id']}"
                    for i in trigger["cart_items"]
                )
                who = trigger["user_id"] or trigger["visitor_id"]
                print(
                    f"e-mail {who}: you left {items} ({trigger['cart_value']:.2f} {trigger['currency']}) in your cart"
                )
            await consumer.commit()  # after acting: a crash repeats, never skips
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main())
