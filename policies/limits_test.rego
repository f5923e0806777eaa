package llmos.limits_test

import rego.v1

import data.llmos.authz

principal(role) := {"id": "key:1", "tenant": "t", "roles": [role], "auth_method": "api_key"}

chat(n) := {"endpoint": "chat.completions", "model": "demo", "max_tokens": n}

test_over_the_hard_limit_is_denied if {
	p := principal("admin")
	r := chat(100000)
	d := authz.decision with input.principal as p with input.request as r
	d.allow == false
	d.reasons[0].code == "max_tokens_too_large"
}

test_at_the_hard_limit_is_allowed if {
	p := principal("admin")
	r := chat(4096)
	authz.allow with input.principal as p with input.request as r
}

test_per_role_cap_is_an_obligation if {
	p := principal("user")
	r := chat(3000)
	d := authz.decision with input.principal as p with input.request as r
	d.allow == true
	d.obligations.max_tokens == 2048
}

test_largest_cap_of_several_roles_wins if {
	p := {"id": "key:1", "tenant": "t", "roles": ["contractor", "user"], "auth_method": "api_key"}
	r := chat(16)
	t := {"hour": 12, "weekday": "Monday"}
	d := authz.decision with input.principal as p with input.request as r with input.clock as t
	d.obligations.max_tokens == 2048
}

test_null_max_tokens_allowed if {
	p := principal("user")
	r := chat(null)
	authz.allow with input.principal as p with input.request as r
}

test_string_max_tokens_denied if {
	p := principal("user")
	r := chat("99999")
	d := authz.decision with input.principal as p with input.request as r
	d.allow == false
	"invalid_max_tokens" in {x.code | some x in d.reasons}
}
