package llmos.hours_test

import rego.v1

import data.llmos.authz

contractor := {"id": "key:3", "tenant": "t", "roles": ["contractor"], "auth_method": "api_key"}

chat := {"endpoint": "chat.completions", "model": "demo", "max_tokens": 16}

test_contractor_in_working_hours if {
	p := contractor
	r := chat
	t := {"hour": 7, "weekday": "Monday"}
	authz.allow with input.principal as p with input.request as r with input.clock as t
}

test_contractor_after_hours if {
	p := contractor
	r := chat
	t := {"hour": 19, "weekday": "Monday"}
	d := authz.decision with input.principal as p with input.request as r with input.clock as t
	d.allow == false
	d.reasons[0].code == "outside_time_window"
}

test_contractor_on_weekend if {
	p := contractor
	r := chat
	t := {"hour": 12, "weekday": "Sunday"}
	d := authz.decision with input.principal as p with input.request as r with input.clock as t
	d.allow == false
	d.reasons[0].code == "outside_time_window"
}

test_missing_clock_denies_windowed_roles if {
	p := contractor
	r := chat
	not authz.allow with input.principal as p with input.request as r
}

test_users_have_no_window if {
	p := object.union(contractor, {"roles": ["user"]})
	r := chat
	t := {"hour": 23, "weekday": "Sunday"}
	authz.allow with input.principal as p with input.request as r with input.clock as t
}

test_lowercase_or_missing_weekday_denies_weekday_roles if {
	p := contractor
	r := chat
	t := {"hour": 12, "weekday": "saturday"}
	not authz.allow with input.principal as p with input.request as r with input.clock as t
	t2 := {"hour": 12}
	not authz.allow with input.principal as p with input.request as r with input.clock as t2
}
