# Unit tests for authz.rego; run with `llmos policy test`.
# rego-cpp quirks: mock input fields one by one (`with input.x as ...`, not `with input as ...`),
# and bind rule values to local variables before using them in `with`.
package llmos.authz_test

import rego.v1

import data.llmos.authz

user_principal := {"id": "key:1", "tenant": "t", "roles": ["user"], "auth_method": "api_key"}

auditor_principal := {"id": "key:2", "tenant": "t", "roles": ["auditor"], "auth_method": "api_key"}

chat_request := {"endpoint": "chat.completions", "model": "demo", "max_tokens": 16, "stream": false, "message_count": 1}

test_user_may_chat if {
	p := user_principal
	r := chat_request
	d := authz.decision with input.principal as p with input.request as r
	d.allow == true
	d.reasons == []
}

test_auditor_may_not_chat if {
	p := auditor_principal
	r := chat_request
	d := authz.decision with input.principal as p with input.request as r
	d.allow == false
	d.reasons[0].code == "role_not_permitted"
}

test_auditor_may_list_models if {
	p := auditor_principal
	authz.allow with input.principal as p with input.request as {"endpoint": "models.list"}
}

test_max_tokens_capped if {
	p := user_principal
	r := object.union(chat_request, {"max_tokens": 100000})
	d := authz.decision with input.principal as p with input.request as r
	d.allow == false
	d.reasons[0].code == "max_tokens_too_large"
}

test_null_max_tokens_allowed if {
	p := user_principal
	r := object.union(chat_request, {"max_tokens": null})
	authz.allow with input.principal as p with input.request as r
}

test_unknown_endpoint_denied if {
	p := user_principal
	d := authz.decision with input.principal as p with input.request as {"endpoint": "images.generate"}
	d.allow == false
	d.reasons[0].code == "unknown_endpoint"
}

test_missing_request_denied if {
	p := user_principal
	d := authz.decision with input.principal as p
	d.allow == false
}

test_no_roles_denied if {
	p := object.union(user_principal, {"roles": []})
	r := chat_request
	not authz.allow with input.principal as p with input.request as r
}
