# Default llmos authorization policy.
#
# Input (see docs/policy.md):
#   input.principal: {id, tenant, roles, auth_method}
#   input.request:   {endpoint, model, max_tokens, stream, message_count}
#   input.time:      RFC 3339 time of the request
# Output: data.llmos.authz.decision = {"allow": bool, "reasons": [{"code", "message"}]}
#
# Written to fail closed: allow needs a positive match (a permitted role for a known
# endpoint) and no deny reason; missing input fields never allow.
package llmos.authz

import rego.v1

# Which roles may call which endpoint. Auditors may list models but not generate.
endpoint_roles := {
	"chat.completions": {"admin", "user"},
	"completions": {"admin", "user"},
	"models.list": {"admin", "user", "auditor"},
}

# Largest max_tokens any request may ask for.
max_tokens_limit := 4096

endpoint := e if {
	e := input.request.endpoint
	is_string(e)
} else := ""

default allow := false

allow if {
	role_permitted
	count(deny) == 0
}

role_permitted if {
	some role in input.principal.roles
	role in endpoint_roles[endpoint]
}

deny contains {"code": "unknown_endpoint", "message": msg} if {
	not endpoint_roles[endpoint]
	msg := concat("", ["endpoint ", endpoint, " is not covered by policy"])
}

deny contains {"code": "role_not_permitted", "message": msg} if {
	endpoint_roles[endpoint]
	not role_permitted
	msg := concat("", ["your role may not call ", endpoint])
}

deny contains {"code": "max_tokens_too_large", "message": msg} if {
	is_number(input.request.max_tokens)
	input.request.max_tokens > max_tokens_limit
	msg := sprintf("max_tokens may be at most %d", [max_tokens_limit])
}

deny contains {"code": "invalid_max_tokens", "message": "max_tokens must be a number or null"} if {
	not is_null(object.get(input, ["request", "max_tokens"], null))
	not is_number(input.request.max_tokens)
}

decision := {"allow": allow, "reasons": [r | some r in deny]}
