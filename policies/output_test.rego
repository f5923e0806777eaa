package llmos.output_test

import rego.v1

import data.llmos.output

out(findings) := {"findings": findings, "total": count(findings), "completion_tokens": 5, "finish_reason": "stop"}

test_clean_output_allowed if {
	o := out({})
	d := output.decision with input.output as o
	d.allow == true
}

test_credential_in_output_blocked if {
	o := out({"AWS_ACCESS_KEY": 1})
	d := output.decision with input.output as o
	d.allow == false
	d.reasons[0].code == "credential_in_output"
}

test_national_id_in_output_redacted if {
	o := out({"US_SSN": 1})
	d := output.decision with input.output as o
	d.allow == true
	"US_SSN" in d.obligations.redact.entities
}

test_missing_output_denies if {
	d := output.decision
	d.allow == false
	d.reasons[0].code == "output_missing"
}
