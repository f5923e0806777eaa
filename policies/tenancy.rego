# Tenant isolation: a model labelled "tenant:<name>" in llmos.yaml serves only those tenants.
package llmos.authz

import rego.v1

model_tenants contains t if {
	some label in input.model.labels
	startswith(label, "tenant:")
	t := trim_prefix(label, "tenant:")
}

deny contains {"code": "tenant_not_permitted", "message": "this model is reserved for other tenants"} if {
	count(model_tenants) > 0
	not input.principal.tenant in model_tenants
}
