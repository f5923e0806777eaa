# Token limits: a hard ceiling for everyone, and a per-role cap applied as an obligation.
package llmos.authz

import rego.v1

max_tokens_limit := cfg.max_tokens_limit

deny contains {"code": "max_tokens_too_large", "message": msg} if {
	is_number(input.request.max_tokens)
	input.request.max_tokens > max_tokens_limit
	msg := concat("", ["max_tokens may be at most ", format_int(max_tokens_limit, 10)])
}

deny contains {"code": "invalid_max_tokens", "message": "max_tokens must be a number or null"} if {
	given := input.request.max_tokens
	not is_null(given)
	not is_number(given)
}

# The largest cap among the caller's roles (a role without a positive cap adds none).
role_caps contains cap if {
	some role in input.principal.roles
	cap := object.get(cfg.roles, [role, "max_tokens"], 0)
	cap > 0
}

# Obligation: generation stops at this many tokens (null: no role cap).
# (Not max(role_caps): rego-cpp's max compares these numbers as text, so max({256, 2048}) = 256.)
max_tokens_cap := cap if {
	some cap in role_caps
	every other in role_caps {
		other <= cap
	}
} else := null
