"""Locust scenarios: many callers booking the same few things at once.

Headless, with numbers you can read (the mesh must be up: ``make run``)::

    locust -f loadtest/locustfile.py --headless -u 64 -r 16 -t 60s \
        --host http://127.0.0.1:8000 --csv .callmesh/locust
    python -m loadtest.invariant --database-url "$DATABASE_URL" \
        --ledger .callmesh/locust-ledger.jsonl

Each confirmed answer a simulated caller receives is appended to a ledger, so the invariant
checker can prove afterwards that every one of them is a row in PostgreSQL and that no two
confirmed bookings overlap. A 409 is an expected answer under contention, not a failure.

Environment knobs: ``CALLMESH_API_TOKEN`` (sent as a bearer token), ``LOCUST_LEDGER`` (ledger
path, default ``.callmesh/locust-ledger.jsonl``), ``LOCUST_CATEGORIES`` (unit categories to
rent, default ``projector,pa_system,generator``: units that need no verification),
``LOCUST_DAYS`` (how many days ahead to spread rentals over; fewer means more contention).
"""

from __future__ import annotations

import json
import os
import random
import threading
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task

LEDGER = Path(os.environ.get("LOCUST_LEDGER", ".callmesh/locust-ledger.jsonl"))
CATEGORIES = [
    c for c in os.environ.get("LOCUST_CATEGORIES", "projector,pa_system,generator").split(",") if c
]
DAYS_AHEAD = int(os.environ.get("LOCUST_DAYS", "14"))
TOKEN = os.environ.get("CALLMESH_API_TOKEN")
_ledger_lock = threading.Lock()


def _record_confirmed(answer: dict[str, Any]) -> None:
    with _ledger_lock:
        LEDGER.parent.mkdir(parents=True, exist_ok=True)
        with LEDGER.open("a", encoding="utf-8") as f:
            f.write(json.dumps(answer) + "\n")


@events.test_start.add_listener
def _fresh_ledger(environment: Any, **_: Any) -> None:
    LEDGER.unlink(missing_ok=True)


class _Caller(HttpUser):
    abstract = True
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.call_id = f"locust-{uuid.uuid4().hex[:12]}"
        if TOKEN:
            self.client.headers["Authorization"] = f"Bearer {TOKEN}"


class RentalCaller(_Caller):
    """Searches, holds a few days of a unit, and confirms: the equipment-rental desk."""

    weight = 3

    def on_start(self) -> None:
        super().on_start()
        self.units: list[str] = []
        for category in CATEGORIES:
            with self.client.get(
                "/inventory/units",
                params={"category": category},
                name="/inventory/units",
                catch_response=True,
            ) as r:
                if r.status_code == 200:
                    self.units += [u["unit_id"] for u in r.json() if u.get("status") == "AVAILABLE"]
                    r.success()
                else:
                    r.failure(f"units: {r.status_code}")

    @task
    def rent(self) -> None:
        if not self.units:
            return
        start = date.today() + timedelta(days=random.randint(1, DAYS_AHEAD))
        end = start + timedelta(days=random.randint(1, 3))
        body = {
            "unit_id": random.choice(self.units),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "call_id": self.call_id,
        }
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        with self.client.post(
            "/inventory/holds", json=body, headers=headers, name="hold", catch_response=True
        ) as r:
            if r.status_code == 409:
                r.success()  # someone else holds it: the expected answer under contention
                return
            if r.status_code != 201:
                r.failure(f"hold: {r.status_code} {r.text[:200]}")
                return
            hold_id = r.json()["hold_id"]
        with self.client.post(
            f"/inventory/holds/{hold_id}/confirm",
            headers={"Idempotency-Key": uuid.uuid4().hex},
            name="confirm",
            catch_response=True,
        ) as r:
            if r.status_code == 201:
                _record_confirmed(r.json())
            elif r.status_code in (409, 410):
                r.success()
            else:
                r.failure(f"confirm: {r.status_code} {r.text[:200]}")


class AppointmentCaller(_Caller):
    """Lists slots and books one: the appointment desk."""

    weight = 1

    def on_start(self) -> None:
        super().on_start()
        r = self.client.get("/scheduling/service-types", name="/scheduling/service-types")
        types = r.json() if r.status_code == 200 else []
        self.service_types = [
            t.get("code") or t.get("service_type") or t.get("name") for t in types
        ]
        self.phone = f"+1555{random.randint(2000000, 9999999)}"

    @task
    def book(self) -> None:
        if not self.service_types:
            return
        service_type = random.choice(self.service_types)
        day = date.today() + timedelta(days=random.randint(1, 7))
        r = self.client.get(
            "/scheduling/slots",
            params={"date": day.isoformat(), "service_type": service_type},
            name="/scheduling/slots",
        )
        if r.status_code != 200 or not r.json().get("slots"):
            return
        slot = random.choice(r.json()["slots"])
        body = {
            "phone": self.phone,
            "service_type": service_type,
            "start": slot["start"],
            "notes": "load test",
        }
        with self.client.post(
            "/scheduling/appointments",
            json=body,
            headers={"Idempotency-Key": uuid.uuid4().hex},
            name="book",
            catch_response=True,
        ) as b:
            if b.status_code in (201, 409):
                b.success()
            else:
                b.failure(f"book: {b.status_code} {b.text[:200]}")
