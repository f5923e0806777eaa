"""Policy as code: Rego policies from ``policies/`` decide every request (see docs/policy.md)."""
