"""Who a request counts against: the principal and its tenant, with the configured defaults."""

from __future__ import annotations

from gateway.limits.config import LimitsConfig, LimitValues
from gateway.limits.values import Limits, Subject


def subjects_for(config: LimitsConfig, principal_id: str, own: Limits | None, tenant: str) -> list[Subject]:
    """The subjects to pass to ``admit`` and ``charge``, principal first.

    ``own`` is the principal's own limits (from its API key), or None when it carries none (an
    OIDC caller, or a key created without limits): then ``default_principal`` applies, whole,
    not merged field by field. A tenant listed in ``tenants`` gets exactly those limits (all
    null there means unlimited); any other tenant gets ``default_tenant``, each tenant in its
    own buckets. Subjects without any limit are left out.
    """
    subjects: list[Subject] = []
    principal = own if own is not None else _limits(config.default_principal)
    if principal is not None and not principal.unlimited:
        subjects.append(Subject(scope="principal", id=principal_id, limits=principal))
    values = config.tenants.get(tenant, config.default_tenant)
    tenant_limits = _limits(values)
    if tenant_limits is not None and not tenant_limits.unlimited:
        subjects.append(Subject(scope="tenant", id=tenant, limits=tenant_limits))
    return subjects


def _limits(values: LimitValues | None) -> Limits | None:
    return values.to_limits() if values is not None else None
