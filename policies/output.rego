# llmos output decision: data.llmos.output.decision, asked on the generated text before it is
# delivered. Input: the input document plus "output" (findings by type, tokens, finish reason).
package llmos.output

import rego.v1

cfg := data.llmos.config

default allow := false

allow if count(deny) == 0

credentials_found contains t if {
	some t in cfg.credential_types
	input.output.findings[t] > 0
}

deny contains {"code": "output_missing", "message": "the output decision needs input.output.findings"} if {
	not is_object(input.output.findings)
}

deny contains {"code": "credential_in_output", "message": msg} if {
	count(credentials_found) > 0
	msg := concat("", [
		"the response contains a credential (", concat(", ", sort([t | some t in credentials_found])), ")",
	])
}

# Evidence for the explanation record: the rules that held (docs/explanations.md).
evidence contains {"rule": concat("", ["output.deny.", r.code]), "detail": r.message} if {
	some r in deny
}

evidence contains {"rule": "output.obligations.redact", "detail": msg} if {
	redact := object.get(cfg, "output_redact", null)
	is_object(redact)
	entities := object.get(redact, "entities", [])
	count(entities) > 0
	msg := concat("", ["the answer's ", concat(", ", entities), " are redacted (", object.get(redact, "operator", "placeholder"), ")"])
}

decision := {
	"allow": allow,
	"reasons": [r | some r in deny],
	"obligations": {"redact": object.get(cfg, "output_redact", null)},
	"evidence": [e | some e in evidence],
}
