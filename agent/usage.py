"""A session's usage, as the calls service prices it.

``AgentSession.usage`` sums each model's usage over the session; the calls service adds up
usage *events*, so the agent reports the difference since its last report.
"""

from __future__ import annotations

from livekit.agents.metrics import (
    AgentSessionUsage,
    LLMModelUsage,
    STTModelUsage,
    TTSModelUsage,
)

from agent.mesh_models import Usage


def usage_from_session(usage: AgentSessionUsage) -> Usage:
    """STT seconds, LLM prompt/cached/completion tokens and TTS characters, over all models."""
    total = Usage()
    for model in usage.model_usage:
        if isinstance(model, STTModelUsage):
            total.stt_audio_seconds += model.audio_duration
        elif isinstance(model, LLMModelUsage):
            total.llm_prompt_tokens += model.input_tokens
            total.llm_cached_tokens += model.input_cached_tokens
            total.llm_completion_tokens += model.output_tokens
        elif isinstance(model, TTSModelUsage):
            total.tts_characters += model.characters_count
    return total


def usage_since(total: Usage, reported: Usage) -> Usage:
    """What ``total`` adds to what was already ``reported`` (never negative)."""
    return Usage(
        stt_audio_seconds=round(max(0.0, total.stt_audio_seconds - reported.stt_audio_seconds), 3),
        llm_prompt_tokens=max(0, total.llm_prompt_tokens - reported.llm_prompt_tokens),
        llm_cached_tokens=max(0, total.llm_cached_tokens - reported.llm_cached_tokens),
        llm_completion_tokens=max(0, total.llm_completion_tokens - reported.llm_completion_tokens),
        tts_characters=max(0, total.tts_characters - reported.tts_characters),
    )
