# Tests for authz.rego and access.rego; run with `llmos policy test`.
# rego-cpp quirks: mock input fields one by one (`with input.x as ...`, not `with input as ...`),
# and bind rule values to local variables before using them in `with`.
package llmos.authz_test

import rego.v1

import data.llmos.authz

user_principal := {"id": "key:1", "tenant": "t", "roles": ["user"], "auth_method": "api_key"}

auditor_principal := {"id": "key:2", "tenant": "t", "roles": ["auditor"], "auth_method": "api_key"}

contractor_principal := {"id": "key:3", "tenant": "t", "roles": ["contractor"], "auth_method": "api_key"}

chat_request := {"endpoint": "chat.completions", "model": "demo", "max_tokens": 16, "stream": false, "message_count": 1}

weekday_noon := {"hour": 12, "weekday": "Monday"}

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

test_contractor_limited_to_listed_models if {
	p := contractor_principal
	r := object.union(chat_request, {"model": "big-model"})
	t := weekday_noon
	d := authz.decision with input.principal as p with input.request as r with input.clock as t
	d.allow == false
	d.reasons[0].code == "model_not_permitted"
}

test_allowed_models_obligation if {
	p := contractor_principal
	r := chat_request
	t := weekday_noon
	d := authz.decision with input.principal as p with input.request as r with input.clock as t
	d.allow == true
	d.obligations.allowed_models == ["demo"]
	u := user_principal
	d2 := authz.decision with input.principal as u with input.request as r
	d2.obligations.allowed_models == null
}

test_only_admins_see_policy_status if {
	a := object.union(user_principal, {"roles": ["admin"]})
	authz.allow with input.principal as a with input.request as {"endpoint": "admin.policy"}
	u := user_principal
	d := authz.decision with input.principal as u with input.request as {"endpoint": "admin.policy"}
	d.reasons[0].code == "role_not_permitted"
}

test_only_admins_manage_keys if {
	a := object.union(user_principal, {"roles": ["admin"]})
	authz.allow with input.principal as a with input.request as {"endpoint": "admin.keys"}
	u := user_principal
	d := authz.decision with input.principal as u with input.request as {"endpoint": "admin.keys"}
	d.reasons[0].code == "role_not_permitted"
}

audit_endpoints := ["audit.checkpoint", "audit.entries", "audit.consistency", "audit.search", "metrics"]

test_auditors_and_admins_read_audit_evidence if {
	p := auditor_principal
	a := object.union(user_principal, {"roles": ["admin"]})
	every e in audit_endpoints {
		authz.allow with input.principal as p with input.request as {"endpoint": e}
		authz.allow with input.principal as a with input.request as {"endpoint": e}
	}
}

test_users_and_contractors_may_not_read_audit_evidence if {
	u := user_principal
	c := contractor_principal
	t := weekday_noon
	every e in audit_endpoints {
		d := authz.decision with input.principal as u with input.request as {"endpoint": e}
		d.allow == false
		d.reasons[0].code == "role_not_permitted"
		d2 := authz.decision with input.principal as c with input.request as {"endpoint": e} with input.clock as t
		d2.allow == false
		d2.reasons[0].code == "role_not_permitted"
	}
}

test_auditors_get_no_token_cap if {
	p := auditor_principal
	d := authz.decision with input.principal as p with input.request as {"endpoint": "audit.entries"}
	d.allow == true
	d.obligations.max_tokens == null
}

test_roles_must_be_a_list if {
	p := object.union(user_principal, {"roles": {"a": "admin"}})
	r := chat_request
	not authz.allow with input.principal as p with input.request as r
}

test_generation_needs_a_model if {
	p := user_principal
	d := authz.decision with input.principal as p with input.request as {"endpoint": "chat.completions"}
	d.allow == false
	"model_missing" in {x.code | some x in d.reasons}
}

test_routes_come_from_data if {
	p := user_principal
	r := chat_request
	d := authz.decision with input.principal as p with input.request as r with data.llmos.config.routes as {"demo": "small"}
	d.obligations.route == {"model": "small"}
	d2 := authz.decision with input.principal as p with input.request as r
	d2.obligations.route == null
}
