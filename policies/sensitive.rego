# Sensitive data in prompts: a national id may only go to a model labelled "internal";
# e-mail addresses and card numbers are redacted before the model sees them.
package llmos.authz

import rego.v1

national_ids_found contains t if {
	some t in cfg.national_id_types
	input.pii.findings[t] > 0
}

model_internal if "internal" in input.model.labels

deny contains {"code": "national_id_to_external_model", "message": msg} if {
	count(national_ids_found) > 0
	not model_internal
	msg := concat("", [
		"the prompt carries a national id (", concat(", ", sort([t | some t in national_ids_found])),
		"); only models labelled internal may receive it",
	])
}

# Obligation: redact these entities in the prompt.
redact := object.get(cfg, "input_redact", null)
