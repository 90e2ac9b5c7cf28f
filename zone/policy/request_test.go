package policy

import (
	"strings"
	"testing"

	"github.com/pzone/pzone/certs"
)

// TestParseRequest: the words of a check name one call, and a caller of
// this zone, by name or by ID, gets both and the zone default.
func TestParseRequest(t *testing.T) {
	const here = certs.ZoneID("GOPC-76IX-MMCQ-PNVE-EO24-4CCO-FBOR-7JS5-E")
	for _, tc := range []struct {
		from, to, method string
		want             Request
		err              string
	}{
		{"alice/phone", "laptop/files", "", Request{FromZone: "alice", FromZoneID: string(here), FromDevice: "phone", ToDevice: "laptop", ToService: "files", SameZone: true}, ""},
		{"gopc76ixmmcqpnveeo244ccofbor7js5e/phone/notes", "hub/echo", "echo", Request{FromZone: "alice", FromZoneID: string(here), FromDevice: "phone", FromApp: "notes", ToDevice: "hub", ToService: "echo", Method: "echo", SameZone: true}, ""},
		{"bob/tv", "laptop/files", "get", Request{FromZone: "bob", FromDevice: "tv", ToDevice: "laptop", ToService: "files", Method: "get"}, ""},
		{"", "laptop/files", "", Request{}, "are required"},
		{"bob", "laptop/files", "", Request{}, "name one caller"},
		{"*", "laptop/files", "", Request{}, "name one caller"},
		{"bob/tv", "laptop/*", "", Request{}, "name one service"},
		{"bob/tv", "*", "", Request{}, "name one service"},
		{"bob/tv", "friend/laptop/files", "", Request{}, "name one service"},
		{"bob/tv", "laptop/files", "*", Request{}, "name one method"},
		{"bob/tv/x/y", "laptop/files", "", Request{}, "invalid WHO"},
	} {
		got, err := ParseRequest(tc.from, tc.to, tc.method)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %s %s: %v, want an error containing %q", tc.from, tc.to, tc.method, err, tc.err)
			}
			continue
		}
		if err == nil {
			got.SameZoneAs("alice", here)
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %s %s: %+v, %v; want %+v", tc.from, tc.to, tc.method, got, err, tc.want)
		}
	}
}
