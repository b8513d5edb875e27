"""How dates, times and money read aloud. Tools answer in sentences the model can repeat."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal


def money(amount: Decimal | float) -> str:
    value = Decimal(str(amount)).quantize(Decimal("0.01"))
    text = f"${value:,.2f}"
    return text[:-3] if text.endswith(".00") else text


def price_range(low: Decimal | float, high: Decimal | float) -> str:
    if Decimal(str(low)) == Decimal(str(high)):
        return "free of charge" if Decimal(str(low)) == 0 else money(low)
    return f"between {money(low)} and {money(high)}"


def day(value: date | datetime) -> str:
    return f"{value:%A, %B} {value.day}"


def time_of_day(value: datetime) -> str:
    return value.strftime("%-I:%M %p").replace(":00 ", " ")


def when(value: datetime) -> str:
    return f"{day(value)} at {time_of_day(value)}"


def listing(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
