package hub

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/policy"
)

// TestPolicyAPI: the admin API's policy endpoints, which pzh policy and
// the dashboard both use: adds are checked and create-only, checks know
// this zone and its friends by name or ID, bad input is a 400 with what
// to write instead (the command checks its flags itself, so only the
// dashboard and scripts reach these answers).
func TestPolicyAPI(t *testing.T) {
	state, err := zsync.OpenHub(filepath.Join(t.TempDir(), "sync.db"), zsync.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	friend := testZoneID(t)
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	h := &Hub{zone: &ZoneInfo{Name: "home", ID: testZoneID(t)}, state: state, log: slog.New(slog.DiscardHandler)}
	h.cfg.Now = func() time.Time { return now }
	h.friends = &friends{h: h, byZone: map[string]*FriendRecord{friend.Compact(): {Petname: "bob", ZoneID: friend}}}
	h.policy = &policyAPI{h: h}
	mux := http.NewServeMux()
	h.policy.routes(mux)

	do := func(method, path, body string, wantStatus int) string {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		b, _ := io.ReadAll(rec.Body)
		if rec.Code != wantStatus {
			t.Fatalf("%s %s %s: %d %s, want %d", method, path, body, rec.Code, b, wantStatus)
		}
		return string(b)
	}

	var r policy.Rule
	json.Unmarshal([]byte(do("POST", "/v1/policy", `{"effect":"allow","from":"bob","to":"laptop/files","method":"get"}`, 201)), &r)
	if len(r.ID) != 8 || r.From != "bob" || r.Method != "get" || !r.Created.Equal(now) {
		t.Fatalf("added %+v", r)
	}
	do("POST", "/v1/policy", `{"id":"no-tv","effect":"deny","from":"bob/tv","to":"laptop/*"}`, 201)
	for body, want := range map[string]string{
		`{"id":"no-tv","effect":"allow","from":"bob","to":"*"}`: "exists already",
		`{"effect":"allow","from":"Bob","to":"*"}`:              `invalid WHO \"Bob\"`,
		`{"effect":"maybe","from":"bob","to":"*"}`:              "invalid effect",
		`{"effect":"allow","to":"*"}`:                           "are required",
		`{"id":"No TV","effect":"allow","from":"bob","to":"*"}`: "invalid rule ID",
		`not json`: "",
	} {
		status := http.StatusBadRequest
		if strings.Contains(want, "exists") {
			status = http.StatusConflict
		}
		if got := do("POST", "/v1/policy", body, status); !strings.Contains(got, want) {
			t.Errorf("%s: %s, want %q", body, got, want)
		}
	}

	// A check: the friend named by petname or zone ID meets the rules
	// naming it either way; this zone's devices get the zone default.
	for body, want := range map[string]string{
		`{"from":"bob/tv","to":"laptop/files","method":"get"}`:                         "rule no-tv",
		`{"from":"` + friend.Compact() + `/radio","to":"laptop/files","method":"get"}`: "rule " + r.ID,
		`{"from":"home/phone","to":"laptop/files"}`:                                    "default: devices of a zone",
		`{"from":"` + string(h.zone.ID) + `/phone","to":"laptop/files"}`:               "default: devices of a zone",
		`{"from":"carol/tv","to":"laptop/files"}`:                                      "default: other zones",
	} {
		var d policy.Decision
		json.Unmarshal([]byte(do("POST", "/v1/policy/check", body, 200)), &d)
		if !strings.Contains(d.Reason, want) {
			t.Errorf("check %s: %+v, want %q", body, d, want)
		}
	}
	do("POST", "/v1/policy/check", `{"from":"bob","to":"laptop/files"}`, 400)

	// A record that is not a rule is listed as skipped, and rm takes it.
	if _, err := state.Put(zsync.BucketPolicy, "junk", []byte("not a rule")); err != nil {
		t.Fatal(err)
	}
	list := do("GET", "/v1/policy", "", 200)
	if !strings.Contains(list, `"skipped"`) || !strings.Contains(list, "junk") || strings.Count(list, `"effect"`) != 2 {
		t.Fatalf("list: %s", list)
	}
	do("DELETE", "/v1/policy/junk", "", 200)
	do("DELETE", "/v1/policy/no-tv", "", 200)
	if got := do("DELETE", "/v1/policy/no-tv", "", 404); !strings.Contains(got, "no rule with ID") {
		t.Fatalf("second rm: %s", got)
	}
	do("DELETE", "/v1/policy/No%20TV", "", 400)
	// A removed rule's ID is free again.
	do("POST", "/v1/policy", `{"id":"no-tv","effect":"deny","from":"bob/tv","to":"laptop/*"}`, 201)
}
