"""What a call cost, from its usage and the price table in ``settings.pricing``."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from services.calls.models import Cost, CostComponents, Usage
from services.settings import Pricing

# Micro-dollars: the smallest amount any component of a real call is worth telling apart.
USD_QUANTUM = Decimal("0.000001")
_THOUSAND = Decimal(1000)
_MINUTE = Decimal(60)


def _exact(number: float | int) -> Decimal:
    # Via str: the price 0.0043 is the decimal 0.0043, not the nearest binary float.
    return Decimal(str(number))


def price_call(usage: Usage, *, duration_seconds: float, pricing: Pricing) -> Cost:
    """Price each component exactly, then round once.

    Every component is computed in ``Decimal`` without rounding (prices and quantities are
    converted through ``str`` so ``0.0043`` stays exactly ``0.0043``). The total is the sum of
    these exact components, rounded once to the micro-dollar with ROUND_HALF_UP. Each component
    is also shown rounded to the micro-dollar, for reading; because the total is not the sum of
    the shown components, they may differ from it by a micro-dollar or two, never more.

    Uncached prompt tokens are billed at the input price and cached ones at the cached price:
    ``llm_input`` covers ``llm_prompt_tokens - llm_cached_tokens``. Call minutes are prorated to
    the second.
    """
    uncached = max(usage.llm_prompt_tokens - usage.llm_cached_tokens, 0)
    exact = {
        "stt": _exact(usage.stt_audio_seconds) / _MINUTE * _exact(pricing.stt_per_minute),
        "llm_input": Decimal(uncached) / _THOUSAND * _exact(pricing.llm_input_per_1k),
        "llm_cached_input": Decimal(usage.llm_cached_tokens)
        / _THOUSAND
        * _exact(pricing.llm_cached_input_per_1k),
        "llm_output": Decimal(usage.llm_completion_tokens)
        / _THOUSAND
        * _exact(pricing.llm_output_per_1k),
        "tts": Decimal(usage.tts_characters) * _exact(pricing.tts_per_character),
        "call_minutes": _exact(duration_seconds) / _MINUTE * _exact(pricing.call_per_minute),
    }
    total = sum(exact.values(), Decimal(0)).quantize(USD_QUANTUM, rounding=ROUND_HALF_UP)
    shown = {
        name: amount.quantize(USD_QUANTUM, rounding=ROUND_HALF_UP) for name, amount in exact.items()
    }
    return Cost(components=CostComponents(**shown), total_usd=total)
