# Time windows: roles with "hours_utc": [start, end] may call only from start:00 to end:00 UTC,
# and with "weekdays_only": true only Monday to Friday. The gateway puts the request's UTC
# hour and weekday in input.clock (rego-cpp's time.weekday is unsafe in a process that has
# loaded torch, and its time.parse_rfc3339_ns rejects a "Z" suffix).
package llmos.authz

import rego.v1

deny contains {"code": "outside_time_window", "message": msg} if {
	some role in input.principal.roles
	window := cfg.roles[role].hours_utc
	not within_window(role, window)
	msg := concat("", [
		"role ", role, " may call only between ", format_int(window[0], 10), ":00 and ",
		format_int(window[1], 10), ":00 UTC", weekdays_note(role),
	])
}

within_window(role, window) if {
	hour := input.clock.hour
	hour >= window[0]
	hour < window[1]
	weekday_ok(role)
}

weekday_ok(role) if not cfg.roles[role].weekdays_only

weekday_ok(role) if {
	cfg.roles[role].weekdays_only
	input.clock.weekday in {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}
}

weekdays_note(role) := ", Monday to Friday" if {
	cfg.roles[role].weekdays_only
} else := ""
