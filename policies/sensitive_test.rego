package llmos.sensitive_test

import rego.v1

import data.llmos.authz

user := {"id": "key:1", "tenant": "t", "roles": ["user"], "auth_method": "api_key"}

chat := {"endpoint": "chat.completions", "model": "demo", "max_tokens": 16}

ssn := {"findings": {"US_SSN": 1}, "total": 1}

test_national_id_to_external_model_denied if {
	p := user
	r := chat
	f := ssn
	d := authz.decision with input.principal as p with input.request as r with input.pii as f with input.model as {"name": "demo", "labels": []}
	d.allow == false
	d.reasons[0].code == "national_id_to_external_model"
}

test_national_id_to_internal_model_allowed if {
	p := user
	r := chat
	f := ssn
	authz.allow with input.principal as p with input.request as r with input.pii as f with input.model as {"name": "demo", "labels": ["internal"]}
}

test_other_findings_are_redacted_not_denied if {
	p := user
	r := chat
	f := {"findings": {"EMAIL_ADDRESS": 2}, "total": 2}
	d := authz.decision with input.principal as p with input.request as r with input.pii as f with input.model as {"name": "demo", "labels": []}
	d.allow == true
	"EMAIL_ADDRESS" in d.obligations.redact.entities
}
