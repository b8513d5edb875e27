"""SIMULATION ONLY: a deterministic stand-in for the LLM, so sessions run offline in text mode.

:class:`ScriptedLLM` is a real ``livekit.agents.llm.LLM``: ``AgentSession`` drives it exactly
as it drives ``openai.LLM``, and the tools it calls run for real against the mesh. It decides
from the conversation alone:

* after tool results, it says them (joined) as its reply, so whatever the mesh said, a
  refusal included, is what the caller hears;
* after a user message, the first :class:`Rule` whose pattern matches and whose tool the
  current agent offers becomes a tool call with arguments from the match;
* otherwise it asks the caller to say that again.

It is not a model of anything and never ships in the worker.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from livekit.agents import llm
from livekit.agents.llm import (
    ChatChunk,
    ChatContext,
    ChoiceDelta,
    CompletionUsage,
    FunctionToolCall,
    LLMStream,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions

FALLBACK = "Sorry, could you say that again?"
Arguments = Callable[[re.Match[str]], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """When the caller's words match ``pattern``, call ``tool`` with ``arguments(match)``
    (default: the pattern's named groups that matched)."""

    pattern: str
    tool: str
    arguments: Arguments | None = None

    def match(self, text: str) -> dict[str, Any] | None:
        m = re.search(self.pattern, text, flags=re.IGNORECASE)
        if m is None:
            return None
        if self.arguments is not None:
            return self.arguments(m)
        return {k: v for k, v in m.groupdict().items() if v is not None}


_DATE = r"\d{4}-\d{2}-\d{2}"
_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?(?:[+-]\d{2}:\d{2})?"

# What the simulated callers say, and the tool each phrase leads to.
APPOINTMENT_RULES: tuple[Rule, ...] = (
    Rule(r"my (?:phone )?number is (?P<phone>[+\d(][\d ()+-]{6,})", "identify_caller"),
    Rule(r"what services", "list_services"),
    Rule(rf"free .*?(?P<service_type>[a-z_]+) on (?P<date>{_DATE})", "find_slots"),
    Rule(
        rf"book (?:an? )?(?P<service_type>[a-z_]+) at (?P<start>{_TIME})"
        r"(?: for (?P<name>[A-Za-z ]+))?",
        "book_appointment",
    ),
    Rule(r"my appointments", "list_my_appointments"),
    Rule(rf"move (?P<reference>[\w-]+) to (?P<new_start>{_TIME})", "reschedule_appointment"),
    Rule(r"cancel (?P<reference>[\w-]+) because (?P<reason>.+)", "cancel_appointment"),
    Rule(r"that'?s all|goodbye", "wrap_up"),
)

RENTAL_RULES: tuple[Rule, ...] = (
    Rule(r"licen[cs]e (?:number )?is (?P<licence_number>[\w-]+)(?: in (?P<state>[A-Z]{2}))?",
         "verify_business_licence"),
    Rule(r"(?:need|looking for) an? (?P<query>[\w ]+?)(?: under \$?(?P<max>\d+))?$",
         "search_equipment",
         lambda m: {"query": m["query"]}
         | ({"max_daily_rate": float(m["max"])} if m["max"] else {})),
    Rule(rf"(?:take|want) (?P<unit_id>[A-Z]{{3}}-\d{{3}}) from (?P<start_date>{_DATE}) to "
         rf"(?P<end_date>{_DATE})", "select_equipment"),
    Rule(r"(?:site|address) is (?P<site>.+)$", "verify_site"),
    Rule(r"(?:offer|how about|do) \$?(?P<rate>\d+(?:\.\d+)?)", "propose_rate",
         lambda m: {"daily_rate": float(m["rate"])}),
    Rule(r"(?:price|rate) is fine|accept the (?:price|rate)", "accept_price"),
    Rule(r"operator is (?P<operator>.+)$", "verify_operator"),
    Rule(r"policy (?:number )?is (?P<policy_number>[\w-]+)", "verify_insurance"),
    Rule(r"confirm|book it", "confirm_booking"),
    Rule(r"that'?s all|goodbye", "wrap_up"),
)  # fmt: skip


class ScriptedLLM(llm.LLM):
    """SIMULATION: picks tool calls by :class:`Rule` and speaks tool results verbatim."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        super().__init__()
        self.rules = tuple(rules)
        self._ids = itertools.count(1)

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "callmesh-simulation"

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: Any = NOT_GIVEN,
        tool_choice: Any = NOT_GIVEN,
        extra_kwargs: Any = NOT_GIVEN,
    ) -> LLMStream:
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )

    def decide(self, chat_ctx: ChatContext, tool_names: set[str]) -> str | FunctionToolCall:
        """The reply text, or the tool call, for the conversation so far."""
        items = chat_ctx.items
        outputs: list[str] = []
        for item in reversed(items):
            if item.type == "function_call_output":
                outputs.append(item.output)
            elif item.type == "function_call":
                continue
            else:
                break
        if outputs:
            return " ".join(reversed(outputs))
        said = next(
            (
                i.text_content or ""
                for i in reversed(items)
                if i.type == "message" and i.role == "user"
            ),
            "",
        )
        for rule in self.rules:
            if rule.tool not in tool_names:
                continue
            arguments = rule.match(said)
            if arguments is not None:
                return FunctionToolCall(
                    name=rule.tool,
                    arguments=json.dumps(arguments),
                    call_id=f"sim_{next(self._ids)}",
                )
        return FALLBACK


class _ScriptedStream(LLMStream):
    async def _run(self) -> None:
        assert isinstance(self._llm, ScriptedLLM)
        names = {name for t in self._tools if (name := getattr(t, "id", None))}
        decision = self._llm.decide(self._chat_ctx, names)
        if isinstance(decision, FunctionToolCall):
            delta = ChoiceDelta(role="assistant", tool_calls=[decision])
        else:
            delta = ChoiceDelta(role="assistant", content=decision)
        chunk_id = f"sim-{id(self)}"
        self._event_ch.send_nowait(ChatChunk(id=chunk_id, delta=delta))
        # Token counts of the rough 4-characters-per-token kind, so usage and cost flow through
        # the session's metrics exactly as a real model's would.
        prompt = sum(len(i.text_content or "") for i in self._chat_ctx.items if i.type == "message")
        written = len(decision.arguments if isinstance(decision, FunctionToolCall) else decision)
        usage = CompletionUsage(
            prompt_tokens=prompt // 4 + 1,
            prompt_cached_tokens=prompt // 8,
            completion_tokens=written // 4 + 1,
            total_tokens=prompt // 4 + written // 4 + 2,
        )
        self._event_ch.send_nowait(ChatChunk(id=chunk_id, usage=usage))


__all__ = ["APPOINTMENT_RULES", "FALLBACK", "RENTAL_RULES", "Rule", "ScriptedLLM"]
