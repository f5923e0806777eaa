# Tests for evidence.rego (and the output decision's evidence); run with `llmos policy test`.
package llmos.evidence_test

import rego.v1

import data.llmos.authz
import data.llmos.output

user := {"id": "key:1", "tenant": "t", "roles": ["user"], "auth_method": "api_key"}

auditor := {"id": "key:2", "tenant": "t", "roles": ["auditor"], "auth_method": "api_key"}

chat := {"endpoint": "chat.completions", "model": "demo", "max_tokens": 16, "stream": false, "message_count": 1}

rules(d) := {e.rule | some e in d.evidence}

test_an_allowed_chat_names_the_rules_that_allowed_it if {
	p := user
	r := chat
	d := authz.decision with input.principal as p with input.request as r
	d.allow
	rs := rules(d)
	"access.role_permitted" in rs
	"access.model_permitted" in rs
	"obligations.max_tokens" in rs
	"obligations.redact" in rs
	not "obligations.route" in rs
	some e in d.evidence
	e.rule == "access.role_permitted"
	e.detail == "role user may call chat.completions"
}

test_a_denial_names_the_deny_rule if {
	p := auditor
	r := chat
	d := authz.decision with input.principal as p with input.request as r
	not d.allow
	rs := rules(d)
	"deny.role_not_permitted" in rs
	not "access.role_permitted" in rs
}

test_a_route_and_explain_level_are_evidence if {
	p := user
	r := chat
	routes := {"demo": "big"}
	d := authz.decision with input.principal as p with input.request as r
		with data.llmos.config.routes as routes
		with data.llmos.config.explain as "summary"
	rs := rules(d)
	"obligations.route" in rs
	"obligations.explain" in rs
}

test_output_evidence_names_the_withholding_rule if {
	f := {"AWS_ACCESS_KEY": 1}
	d := output.decision with input.output.findings as f
	not d.allow
	"output.deny.credential_in_output" in rules(d)
	"output.obligations.redact" in rules(d)
}

test_clean_output_has_only_the_redact_evidence if {
	f := {}
	d := output.decision with input.output.findings as f
	d.allow
	rules(d) == {"output.obligations.redact"}
}

test_an_explain_object_is_evidence_by_its_level if {
	p := user
	r := chat
	explain := {"level": "full", "method": "integrated_gradients", "steps": 32}
	d := authz.decision with input.principal as p with input.request as r with data.llmos.config.explain as explain
	some e in d.evidence
	e.rule == "obligations.explain"
	e.detail == "explanations at level full"
	d.obligations.explain == explain
}
