# llmos input decision: data.llmos.authz.decision, asked before anything is generated.
#
# The rules live in several files of this one package; each adds deny reasons or obligation
# parts: access.rego (roles, endpoints, models), tenancy.rego (tenant isolation),
# limits.rego (token caps), hours.rego (time windows), sensitive.rego (sensitive data).
# Settings are in data.json (data.llmos.config). Contract: docs/policy.md.
#
# Written to fail closed: allow needs a positive role match for the endpoint and no deny
# reason; missing input fields never allow.
package llmos.authz

import rego.v1

cfg := data.llmos.config

endpoint := e if {
	e := input.request.endpoint
	is_string(e)
} else := ""

default allow := false

allow if {
	role_permitted
	count(deny) == 0
}

explain_level := object.get(cfg, "explain", "none")

# Routing: data.llmos.config.routes maps a requested model to the model that serves it.
route := {"model": m} if {
	m := cfg.routes[input.request.model]
	is_string(m)
} else := null

obligations := {
	"max_tokens": max_tokens_cap,
	"allowed_models": allowed_models,
	"redact": redact,
	"route": route,
	"explain": explain_level,
}

decision := {
	"allow": allow,
	"reasons": [r | some r in deny],
	"obligations": obligations,
	"evidence": [e | some e in evidence],
}
