package api

import "github.com/pzone/pzone/zone/policy"

// The requests and answers of the hub's policy endpoints (pzh policy and
// the dashboard's policy page); their JSON is stable (docs/PROTOCOL.md).

// PolicyList is the answer of GET /v1/policy: the rules most specific
// first, and the records of the policy bucket that are not rules (each
// with why), which take no part in any decision.
type PolicyList struct {
	Rules   []policy.Rule `json:"rules"`
	Skipped []string      `json:"skipped,omitempty"`
}

// PolicyAddRequest is the body of POST /v1/policy. ID is optional (the
// hub draws one); Method "" or "*" is any method.
type PolicyAddRequest struct {
	ID     string `json:"id,omitempty"`
	Effect string `json:"effect"` // policy.EffectAllow or policy.EffectDeny
	From   string `json:"from"`
	To     string `json:"to"`
	Method string `json:"method,omitempty"`
}

// PolicyCheckRequest is the body of POST /v1/policy/check: one call, no
// wildcards. Method "" is none (only rules for any method match).
type PolicyCheckRequest struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Method string `json:"method,omitempty"`
}
