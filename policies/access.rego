# Role-based access: which roles may call which endpoint, and use which models.
package llmos.authz

import rego.v1

# Auditors may list models and read audit evidence (checkpoints, entries, proofs) but not generate.
endpoint_roles := {
	"chat.completions": {"admin", "user", "contractor"},
	"completions": {"admin", "user", "contractor"},
	"models.list": {"admin", "user", "auditor", "contractor"},
	"admin.policy": {"admin"},
	"admin.keys": {"admin"},
	"admin.auth": {"admin"},
	"admin.workers": {"admin"},
	"admin.models": {"admin"},
	"audit.checkpoint": {"admin", "auditor"},
	"audit.entries": {"admin", "auditor"},
	"audit.consistency": {"admin", "auditor"},
	"audit.search": {"admin", "auditor"},
	"metrics": {"admin", "auditor"},  # Prometheus scrapes with an auditor key
	# Own requests' records for everyone; the gateway lets auditors and admins read any.
	"explanations.get": {"admin", "user", "auditor", "contractor"},
}

role_permitted if {
	is_array(input.principal.roles)
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

# Models the caller's roles may use (data.llmos.config.roles[role].models); "*" is every model.
role_models contains m if {
	some role in input.principal.roles
	some m in object.get(cfg.roles, [role, "models"], [])
}

all_models if "*" in role_models

model_permitted if all_models

model_permitted if input.request.model in role_models

deny contains {"code": "model_not_permitted", "message": msg} if {
	is_string(input.request.model)
	role_permitted
	not model_permitted
	msg := concat("", ["your role may not use model ", input.request.model])
}

# Generation needs a model (and the gateway always sends it): fail closed without one.
generation_endpoints := {"chat.completions", "completions"}

deny contains {"code": "model_missing", "message": "the request names no model"} if {
	endpoint in generation_endpoints
	not is_string(input.request.model)
}

# Obligation: the models this caller may see and use (null: all of them).
allowed_models := null if {
	all_models
} else := sort([m | some m in role_models])
