package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/policy"
)

// TestPolicyCheckRequest: the flags of pzh policy check name one call, and
// a caller of this zone, by name or by ID, gets both and the zone default.
func TestPolicyCheckRequest(t *testing.T) {
	const here = certs.ZoneID("GOPC-76IX-MMCQ-PNVE-EO24-4CCO-FBOR-7JS5-E")
	for _, tc := range []struct {
		from, to, method string
		want             policy.Request
		err              string // part of a usage error
	}{
		{"alice/phone", "laptop/files", "", policy.Request{FromZone: "alice", FromZoneID: string(here), FromDevice: "phone", ToDevice: "laptop", ToService: "files", SameZone: true}, ""},
		{"gopc76ixmmcqpnveeo244ccofbor7js5e/phone/notes", "hub/echo", "echo", policy.Request{FromZone: "alice", FromZoneID: string(here), FromDevice: "phone", FromApp: "notes", ToDevice: "hub", ToService: "echo", Method: "echo", SameZone: true}, ""},
		{"bob/tv", "laptop/files", "get", policy.Request{FromZone: "bob", FromDevice: "tv", ToDevice: "laptop", ToService: "files", Method: "get"}, ""},
		{"", "laptop/files", "", policy.Request{}, "are required"},
		{"bob", "laptop/files", "", policy.Request{}, "name one caller"},
		{"*", "laptop/files", "", policy.Request{}, "name one caller"},
		{"bob/tv", "laptop/*", "", policy.Request{}, "name one service"},
		{"bob/tv", "*", "", policy.Request{}, "name one service"},
		{"bob/tv", "laptop/files", "*", policy.Request{}, "name one method"},
		{"bob/tv/x/y", "laptop/files", "", policy.Request{}, "invalid WHO"},
	} {
		o := &hubPolicyCheckOptions{from: tc.from, to: tc.to, method: tc.method}
		got, err := o.request()
		if tc.err != "" {
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %s %s: %v, want a usage error containing %q", tc.from, tc.to, tc.method, err, tc.err)
			}
			continue
		}
		if err == nil {
			sameZone(&got, "alice", here)
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %s %s: %+v, %v; want %+v", tc.from, tc.to, tc.method, got, err, tc.want)
		}
	}
}
