package llmos.tenancy_test

import rego.v1

import data.llmos.authz

principal(tenant) := {"id": "key:1", "tenant": tenant, "roles": ["user"], "auth_method": "api_key"}

chat := {"endpoint": "chat.completions", "model": "fin", "max_tokens": 16}

test_labelled_model_serves_its_tenant if {
	p := principal("finance")
	r := chat
	authz.allow with input.principal as p with input.request as r with input.model as {"name": "fin", "labels": ["tenant:finance"]}
}

test_labelled_model_refuses_other_tenants if {
	p := principal("marketing")
	r := chat
	d := authz.decision with input.principal as p with input.request as r with input.model as {"name": "fin", "labels": ["tenant:finance", "tenant:legal"]}
	d.allow == false
	d.reasons[0].code == "tenant_not_permitted"
}

test_unlabelled_model_serves_everyone if {
	p := principal("marketing")
	r := chat
	authz.allow with input.principal as p with input.request as r with input.model as {"name": "fin", "labels": ["internal"]}
}
