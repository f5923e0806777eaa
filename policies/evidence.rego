# Evidence: which rules produced the input decision and its obligations, one item per rule that
# held, for the explanation record of every request (docs/explanations.md). Details name roles,
# endpoints, models and entity types only: the policy input carries no prompt text or PII.
package llmos.authz

import rego.v1

evidence contains {"rule": "access.role_permitted", "detail": msg} if {
	is_array(input.principal.roles)
	some role in input.principal.roles
	role in endpoint_roles[endpoint]
	msg := concat("", ["role ", role, " may call ", endpoint])
}

evidence contains {"rule": "access.model_permitted", "detail": msg} if {
	is_string(input.request.model)
	role_permitted
	model_permitted
	msg := concat("", ["the caller's roles may use ", model_scope, " (", input.request.model, ")"])
}

model_scope := "every model" if all_models else := "this model"

evidence contains {"rule": concat("", ["deny.", r.code]), "detail": r.message} if {
	some r in deny
}

evidence contains {"rule": "obligations.max_tokens", "detail": msg} if {
	is_number(max_tokens_cap)
	msg := concat("", ["the caller's roles cap generation at ", format_int(max_tokens_cap, 10), " tokens"])
}

evidence contains {"rule": "obligations.redact", "detail": msg} if {
	is_object(redact)
	entities := object.get(redact, "entities", [])
	count(entities) > 0
	operator := object.get(redact, "operator", "placeholder")
	msg := concat("", ["the prompt's ", concat(", ", entities), " are redacted (", operator, ")"])
}

evidence contains {"rule": "obligations.route", "detail": msg} if {
	is_object(route)
	msg := concat("", ["requests for ", input.request.model, " are served by ", route.model])
}

evidence contains {"rule": "obligations.explain", "detail": msg} if {
	level := explain_name
	level != "none"
	msg := concat("", ["explanations at level ", level])
}

# The explain obligation is a level, or an object with one (docs/explanations.md).
explain_name := object.get(explain_level, "level", "summary") if is_object(explain_level) else := explain_level
