"""Call pricing against hand-computed cases (the arithmetic is written out in each case)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.calls import Usage, price_call
from services.settings import Pricing

pytestmark = pytest.mark.unit

# The defaults of the issue, spelt out so an environment variable cannot change them.
PRICES = Pricing(
    stt_per_minute=0.0043,
    llm_input_per_1k=0.0015,
    llm_cached_input_per_1k=0.00075,
    llm_output_per_1k=0.002,
    tts_per_character=0.00001,
    call_per_minute=0.0,
)


def _components(cost) -> dict[str, Decimal]:
    return dict(cost.components)


def test_zero_usage_costs_nothing():
    cost = price_call(Usage(), duration_seconds=0, pricing=PRICES)
    assert cost.total_usd == 0
    assert set(_components(cost).values()) == {Decimal(0)}


def test_every_component_with_cached_tokens_and_call_minutes():
    # stt: 90 s = 1.5 min * 0.0043                      = 0.00645
    # llm_input: (12,000 - 4,000) = 8 K * 0.0015        = 0.012
    # llm_cached_input: 4 K * 0.00075                   = 0.003
    # llm_output: 0.8 K * 0.002                         = 0.0016
    # tts: 1,500 chars * 0.00001                        = 0.015
    # call_minutes: 120 s = 2 min * 0.01                = 0.02
    # total                                             = 0.05805
    usage = Usage(
        stt_audio_seconds=90,
        llm_prompt_tokens=12_000,
        llm_cached_tokens=4_000,
        llm_completion_tokens=800,
        tts_characters=1_500,
    )
    prices = PRICES.model_copy(update={"call_per_minute": 0.01})
    cost = price_call(usage, duration_seconds=120, pricing=prices)
    assert _components(cost) == {
        "stt": Decimal("0.00645"),
        "llm_input": Decimal("0.012"),
        "llm_cached_input": Decimal("0.003"),
        "llm_output": Decimal("0.0016"),
        "tts": Decimal("0.015"),
        "call_minutes": Decimal("0.02"),
    }
    assert cost.total_usd == Decimal("0.05805")
    assert cost.model_dump(mode="json")["total_usd"] == 0.05805


def test_fully_cached_prompt_is_billed_only_at_the_cached_price():
    # llm_input: (2,000 - 2,000) = 0 * 0.0015 = 0
    # llm_cached_input: 2 K * 0.00075        = 0.0015
    usage = Usage(llm_prompt_tokens=2_000, llm_cached_tokens=2_000)
    cost = price_call(usage, duration_seconds=30, pricing=PRICES)
    assert cost.components.llm_input == 0
    assert cost.components.llm_cached_input == Decimal("0.0015")
    assert cost.total_usd == Decimal("0.0015")


def test_total_is_rounded_once_not_summed_from_rounded_parts():
    # stt: 7 s = 7/60 min * 0.0043  = 0.000501666...  (shown 0.000502)
    # llm_input: 0.333 K * 0.0015    = 0.0004995       (shown 0.000500, half up)
    # exact total                    = 0.001001166...  -> 0.001001
    # the shown parts would add up to 0.001002: rounding twice would overcharge.
    usage = Usage(stt_audio_seconds=7, llm_prompt_tokens=333)
    cost = price_call(usage, duration_seconds=7, pricing=PRICES)
    assert cost.components.stt == Decimal("0.000502")
    assert cost.components.llm_input == Decimal("0.000500")
    assert cost.total_usd == Decimal("0.001001")


def test_ten_minute_call_with_free_call_minutes():
    # stt: 600 s = 10 min * 0.0043 = 0.043; call minutes are priced at 0 by default.
    # llm_output: 2.5 K * 0.002   = 0.005
    usage = Usage(stt_audio_seconds=600, llm_completion_tokens=2_500)
    cost = price_call(usage, duration_seconds=600, pricing=PRICES)
    assert cost.components.call_minutes == 0
    assert cost.total_usd == Decimal("0.048")


def test_half_a_micro_dollar_rounds_up():
    # tts: 1 char * 0.0000005 = 0.0000005 -> 0.000001 with ROUND_HALF_UP (half-even gives 0).
    prices = PRICES.model_copy(update={"tts_per_character": 0.0000005})
    cost = price_call(Usage(tts_characters=1), duration_seconds=0, pricing=prices)
    assert cost.total_usd == Decimal("0.000001")


def test_prices_are_taken_as_written_not_as_binary_floats():
    # 3 min of STT at 0.0043 is exactly 0.0129; a binary float would leave a trailing digit.
    cost = price_call(Usage(stt_audio_seconds=180), duration_seconds=180, pricing=PRICES)
    assert cost.components.stt == Decimal("0.0129")
    assert str(cost.total_usd) == "0.012900"
