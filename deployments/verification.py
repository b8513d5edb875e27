"""The verification application at ``/verification``: the four checks, a call's audit trail,
spoken contact normalisation; and ``missing_requirements`` for inventory's confirm, called by
DeploymentHandle."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from deployments.api import service_api
from deployments.composition import verification_service
from deployments.deps import PERSONAL, WRITE, Verification
from deployments.handles import RemoteDeployment
from deployments.metrics import Metrics
from deployments.replica import ServiceReplica, service_deployment
from services.settings import Settings
from services.verification import (
    ContactDetails,
    VerificationResult,
    VerificationService,
)

APP_NAME = "verification"
DEPLOYMENT_NAME = "Verification"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LicenceCheck(_Body):
    call_id: str = Field(max_length=128)
    licence_number: str = Field(max_length=64)
    state: str | None = Field(None, max_length=32)


class SiteCheck(_Body):
    call_id: str = Field(max_length=128)
    site_id: str = Field(max_length=200, description="The site's id or its street address.")
    weight_class: str = Field(max_length=16)


class OperatorCheck(_Body):
    call_id: str = Field(max_length=128)
    operator_id: str = Field(max_length=120, description="Operator licence id or full name.")
    certification: str = Field(max_length=32)


class InsuranceCheck(_Body):
    call_id: str = Field(max_length=128)
    policy_number: str = Field(max_length=64)
    required_amount: Decimal


class ContactText(_Body):
    email: str | None = Field(None, max_length=320, description='As said: "john at gmail dot com".')
    phone: str | None = Field(None, max_length=64)


router = APIRouter()


@router.post("/business-licence", dependencies=[WRITE], tags=["checks"])
async def verify_business_licence(
    body: LicenceCheck, verification: Verification
) -> VerificationResult:
    """Is the business licence on file (in that state), in good standing and current?"""
    return await verification.verify_business_licence(body.call_id, body.licence_number, body.state)


@router.post("/site-safety", dependencies=[WRITE], tags=["checks"])
async def verify_site_safety(body: SiteCheck, verification: Verification) -> VerificationResult:
    """Can the job site take a unit of that weight class?"""
    return await verification.verify_site_safety(body.call_id, body.site_id, body.weight_class)


@router.post("/operator-certification", dependencies=[WRITE], tags=["checks"])
async def verify_operator_certification(
    body: OperatorCheck, verification: Verification
) -> VerificationResult:
    """Does the operator hold the certification, current and full?"""
    return await verification.verify_operator_certification(
        body.call_id, body.operator_id, body.certification
    )


@router.post("/insurance", dependencies=[WRITE], tags=["checks"])
async def verify_insurance(body: InsuranceCheck, verification: Verification) -> VerificationResult:
    """Is the policy current, covering at least the required amount?"""
    return await verification.verify_insurance(
        body.call_id, body.policy_number, body.required_amount
    )


@router.get("/calls/{call_id}", dependencies=[PERSONAL], tags=["checks"])
async def list_for_call(call_id: str, verification: Verification) -> list[VerificationResult]:
    """Every check recorded for the call, oldest first."""
    return await verification.list_for_call(call_id)


@router.post("/contact", dependencies=[WRITE], tags=["contact"])
async def normalize_contact(body: ContactText, verification: Verification) -> ContactDetails:
    """An email address and/or phone number as said or typed, in canonical form."""
    return await verification.normalize_contact(email=body.email, phone=body.phone)


def build_verification_api(
    settings: Settings,
    *,
    service: VerificationService | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    return service_api("verification", router, settings, metrics=metrics, service=service)


@service_deployment(DEPLOYMENT_NAME)
@serve.ingress()
class VerificationDeployment(ServiceReplica):
    service: VerificationService
    api = staticmethod(build_verification_api)

    def open_service(self, peer: RemoteDeployment | None) -> None:
        self.service = verification_service(self.context.settings, self.context.backends.pool)
        self.on_close(self.service.provider.aclose)

    async def missing_requirements(
        self, *, call_id: str | None, certification: str | None, min_insurance: Decimal | None
    ) -> list[str]:
        """Inventory's RequirementsChecker, over a DeploymentHandle."""
        return await self.service.missing_requirements(
            call_id=call_id, certification=certification, min_insurance=min_insurance
        )


def verification_app(settings: Settings) -> serve.Application:
    return VerificationDeployment.bind(settings)  # type: ignore[attr-defined]


def verification_remote() -> RemoteDeployment:
    return RemoteDeployment(deployment=DEPLOYMENT_NAME, app_name=APP_NAME, what="Verifications")
