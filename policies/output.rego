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

decision := {
	"allow": allow,
	"reasons": [r | some r in deny],
	"obligations": {"redact": object.get(cfg, "output_redact", null)},
}
