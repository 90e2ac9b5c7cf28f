package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
)

// testZoneID is the ID of the Ed25519 key with an all-zero seed
// (docs/PROTOCOL.md §2.1), standing for a friend's zone.
const testZoneID = "GOPC-76IX-MMCQ-PNVE-EO24-4CCO-FBOR-7JS5-E"

func TestPolicyParseRule(t *testing.T) {
	for _, tc := range []struct {
		from, to, method, effect string
		want                     Rule   // From, To, Method, Effect
		err                      string // a substring of the error; "" for success
	}{
		{"*", "*", "", "allow", Rule{From: "*", To: "*", Method: "*", Effect: "allow"}, ""},
		{"alice", "laptop/*", "*", "deny", Rule{From: "alice", To: "laptop/*", Method: "*", Effect: "deny"}, ""},
		{"alice/phone", "laptop/files", "get", "allow", Rule{From: "alice/phone", To: "laptop/files", Method: "get", Effect: "allow"}, ""},
		{"alice/phone/notes.app", "hub/echo_2", "Echo.Do", "allow", Rule{From: "alice/phone/notes.app", To: "hub/echo_2", Method: "Echo.Do", Effect: "allow"}, ""},
		// Zone IDs in any spelling ParseZoneID takes come out in display form.
		{strings.ReplaceAll(testZoneID, "-", ""), "*", "", "allow", Rule{From: testZoneID, To: "*", Method: "*", Effect: "allow"}, ""},
		{strings.ToLower(testZoneID) + "/tv", "*", "", "allow", Rule{From: testZoneID + "/tv", To: "*", Method: "*", Effect: "allow"}, ""},

		{"", "*", "", "allow", Rule{}, "invalid WHO \"\""},
		{"a/b/c/d", "*", "", "allow", Rule{}, "use *, ZONE, ZONE/DEVICE or ZONE/DEVICE/APP"},
		{"*/phone", "*", "", "allow", Rule{}, "the zone cannot be *"},
		{"alice/*", "*", "", "allow", Rule{}, "write the zone alone"},
		{"alice/phone/*", "*", "", "allow", Rule{}, "write ZONE/DEVICE"},
		{"Alice", "*", "", "allow", Rule{}, `invalid zone name "Alice": use 1-63 lower-case letters, digits and '-'; or a zone ID`},
		{testZoneID[:len(testZoneID)-1] + "A", "*", "", "allow", Rule{}, "check character does not match"},
		{"al_ice", "*", "", "allow", Rule{}, "invalid zone name \"al_ice\""},
		{"-alice", "*", "", "allow", Rule{}, "must not start or end with '-'"},
		{"alice/Phone", "*", "", "allow", Rule{}, "invalid device name"},
		{"alice/phone/My App", "*", "", "allow", Rule{}, "invalid app name"},
		{"alice/phone/" + strings.Repeat("a", 65), "*", "", "allow", Rule{}, "invalid app name"},
		{"alice//x", "*", "", "allow", Rule{}, "invalid device name"},
		{"*", "", "", "allow", Rule{}, "invalid TARGET \"\""},
		{"*", "laptop", "", "allow", Rule{}, "use *, DEVICE/SERVICE or DEVICE/*"},
		{"*", "alice/laptop/files/x", "", "allow", Rule{}, "invalid TARGET"},
		{"*", "bob/*/files", "", "allow", Rule{}, "for the whole zone write ZONE/*/*"},
		{"*", "Bob/laptop/files", "", "allow", Rule{}, "zone: invalid zone name"},
		{"*", "*/files", "", "allow", Rule{}, "invalid device name"},
		{"*", "laptop/", "", "allow", Rule{}, "invalid service name"},
		{"*", "laptop/Files", "", "allow", Rule{}, "invalid service name"},
		{"*", "*", "a b", "allow", Rule{}, "invalid method"},
		{"*", "*", "get*", "allow", Rule{}, "invalid method"},
		{"*", "*", "\x00", "allow", Rule{}, "invalid method"},
		{"*", "*", strings.Repeat("m", maxMethod+1), "allow", Rule{}, "invalid method"},
		{"*", "*", "", "Allow", Rule{}, "invalid effect \"Allow\": use allow or deny"},
		{"*", "*", "", "", Rule{}, "invalid effect"},
	} {
		got, err := ParseRule(tc.from, tc.to, tc.method, tc.effect)
		name := tc.from + " " + tc.to + " " + tc.method + " " + tc.effect
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one containing %q", name, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", name, got, err, tc.want)
		}
	}
}

func TestPolicyCheckRuleID(t *testing.T) {
	for id, ok := range map[string]bool{"ab12cd34": true, "no-friends_2": true, "": false, "A": false, "a/b": false, "a.b": false, strings.Repeat("a", maxRuleID): true, strings.Repeat("a", maxRuleID+1): false} {
		if err := CheckRuleID(id); (err == nil) != ok {
			t.Errorf("CheckRuleID(%q) = %v, want ok %v", id, err, ok)
		}
	}
	seen := map[string]bool{}
	for range 100 {
		id := NewRuleID()
		if len(id) != 8 || CheckRuleID(id) != nil || seen[id] {
			t.Fatalf("NewRuleID() = %q: not 8 valid characters, or a repeat", id)
		}
		seen[id] = true
	}
}

// rule builds a valid rule or fails the test.
func rule(t *testing.T, id, effect, from, to, method string) Rule {
	t.Helper()
	r, err := ParseRule(from, to, method, effect)
	if err != nil {
		t.Fatal(err)
	}
	r.ID = id
	return r
}

func TestPolicyDecide(t *testing.T) {
	phone := Request{FromZone: "alice", FromDevice: "phone", FromApp: "notes", ToDevice: "laptop", ToService: "files", Method: "get", SameZone: true}
	bob := Request{FromZone: "bob", FromZoneID: testZoneID, FromDevice: "tv", FromApp: "photos", ToDevice: "laptop", ToService: "files", Method: "get"}
	with := func(r Request, edit func(*Request)) Request { edit(&r); return r }

	type want struct {
		allow bool
		rule  string // ID of the deciding rule; "" for the default
	}
	for _, tc := range []struct {
		name  string
		rules []Rule
		req   Request
		want  want
	}{
		{"no rules, same zone: default allow", nil, phone, want{true, ""}},
		{"no rules, other zone: default deny", nil, bob, want{false, ""}},
		{"anyone, anything", []Rule{rule(t, "r1", "allow", "*", "*", "")}, bob, want{true, "r1"}},
		{"deny within the zone", []Rule{rule(t, "r1", "deny", "alice", "laptop/*", "")}, phone, want{false, "r1"}},

		// WHO specificity: app > device > zone > *, whatever the target.
		{"device beats zone", []Rule{rule(t, "z", "deny", "alice", "laptop/files", "get"), rule(t, "d", "allow", "alice/phone", "*", "")}, phone, want{true, "d"}},
		{"app beats device", []Rule{rule(t, "d", "allow", "alice/phone", "laptop/files", "get"), rule(t, "a", "deny", "alice/phone/notes", "*", "")}, phone, want{false, "a"}},
		{"zone beats anyone", []Rule{rule(t, "any", "allow", "*", "laptop/files", "get"), rule(t, "z", "deny", "bob", "*", "")}, bob, want{false, "z"}},
		// Then TARGET: service > device/* > *.
		{"service beats device/*", []Rule{rule(t, "dev", "deny", "alice/phone", "laptop/*", ""), rule(t, "svc", "allow", "alice/phone", "laptop/files", "")}, phone, want{true, "svc"}},
		{"device/* beats *", []Rule{rule(t, "all", "allow", "bob", "*", "get"), rule(t, "dev", "deny", "bob", "laptop/*", "")}, bob, want{false, "dev"}},
		// Then the method: exact > any.
		{"exact method beats any", []Rule{rule(t, "any", "deny", "bob", "laptop/files", ""), rule(t, "get", "allow", "bob", "laptop/files", "get")}, bob, want{true, "get"}},
		{"other method does not match", []Rule{rule(t, "put", "allow", "bob", "laptop/files", "put")}, bob, want{false, ""}},
		{"* method stored as empty matches", []Rule{{ID: "e", From: "bob", To: "laptop/files", Method: "", Effect: "allow"}}, bob, want{true, "e"}},

		// Ties: deny wins, then the smaller ID is named.
		{"tie: deny wins", []Rule{rule(t, "a", "allow", "bob", "laptop/*", ""), rule(t, "b", "deny", "bob", "laptop/*", "")}, bob, want{false, "b"}},
		{"tie: deny wins in any order", []Rule{rule(t, "b", "deny", "bob", "laptop/*", ""), rule(t, "a", "allow", "bob", "laptop/*", "")}, bob, want{false, "b"}},
		{"tie of allows: smaller ID", []Rule{rule(t, "y", "allow", "bob", "*", ""), rule(t, "x", "allow", "bob", "*", "")}, bob, want{true, "x"}},
		{"tie of denies: smaller ID", []Rule{rule(t, "y", "deny", "alice", "*", ""), rule(t, "x", "deny", "alice", "*", "")}, phone, want{false, "x"}},

		// Matching.
		{"other device of the zone", []Rule{rule(t, "r", "deny", "alice/tablet", "*", "")}, phone, want{true, ""}},
		{"other app", []Rule{rule(t, "r", "deny", "alice/phone/mail", "*", "")}, phone, want{true, ""}},
		{"app rule needs an app", []Rule{rule(t, "r", "deny", "alice/phone/notes", "*", "")}, with(phone, func(r *Request) { r.FromApp = "" }), want{true, ""}},
		{"other target device", []Rule{rule(t, "r", "allow", "bob", "desktop/*", "")}, bob, want{false, ""}},
		{"other service", []Rule{rule(t, "r", "allow", "bob", "laptop/music", "")}, bob, want{false, ""}},
		{"zone by ID", []Rule{rule(t, "r", "allow", strings.ToLower(testZoneID)+"/tv", "laptop/files", "")}, bob, want{true, "r"}},
		{"zone by ID in FromZone", []Rule{rule(t, "r", "allow", testZoneID, "*", "")}, with(bob, func(r *Request) { r.FromZone, r.FromZoneID = testZoneID, "" }), want{true, "r"}},
		{"zone by ID, caller without ID", []Rule{rule(t, "r", "allow", testZoneID, "*", "")}, with(bob, func(r *Request) { r.FromZoneID = "" }), want{false, ""}},
		{"zone by name, not by ID", []Rule{rule(t, "r", "allow", "carol", "*", "")}, bob, want{false, ""}},
		{"local zone by name", []Rule{rule(t, "r", "deny", "alice/phone", "laptop/files", "get")}, phone, want{false, "r"}},
		{"SameZone does not widen rules", []Rule{rule(t, "r", "deny", "bob", "*", "")}, phone, want{true, ""}},
		{"malformed rule never matches", []Rule{{ID: "bad", From: "*", To: "*", Effect: "maybe"}, {ID: "bad2", From: "a/b/c/d", To: "*", Effect: "deny"}}, phone, want{true, ""}},
	} {
		d := Decide(tc.rules, tc.req)
		got := want{d.Allow, ""}
		if d.Rule != nil {
			got.rule = d.Rule.ID
		}
		if got != tc.want {
			t.Errorf("%s: %+v (%s), want %+v", tc.name, got, d.Reason, tc.want)
			continue
		}
		switch {
		case d.Rule != nil && !strings.HasPrefix(d.Reason, "rule "+d.Rule.ID+" ("):
			t.Errorf("%s: reason %q does not name rule %s", tc.name, d.Reason, d.Rule.ID)
		case d.Rule == nil && tc.req.SameZone && d.Reason != reasonSameZone, d.Rule == nil && !tc.req.SameZone && d.Reason != reasonOtherZone:
			t.Errorf("%s: reason %q, want the default's", tc.name, d.Reason)
		}
	}
}

// Decide's answer must not alias the caller's slice.
func TestPolicyDecideCopiesRule(t *testing.T) {
	rules := []Rule{rule(t, "r", "deny", "*", "*", "")}
	d := Decide(rules, Request{})
	rules[0].ID = "changed"
	if d.Rule.ID != "r" || d.Reason != "rule r (deny from * to *)" {
		t.Fatalf("decision %+v changed with the slice", d)
	}
}

func TestPolicySpecificity(t *testing.T) {
	for _, tc := range []struct {
		from, to, method string
		want             Specificity
	}{
		{"*", "*", "", Specificity{0, 0, 0}},
		{"alice", "laptop/*", "get", Specificity{1, 2, 1}},
		{"alice/phone", "laptop/files", "*", Specificity{2, 3, 0}},
		{"alice/phone", "bob/*/*", "*", Specificity{2, 1, 0}},
		{"alice/phone", "bob/laptop/*", "*", Specificity{2, 2, 0}},
		{"alice/phone", "bob/laptop/files", "*", Specificity{2, 3, 0}},
		{"alice/phone/notes", "*", "", Specificity{3, 0, 0}},
	} {
		if got := rule(t, "r", "allow", tc.from, tc.to, tc.method).Specificity(); got != tc.want {
			t.Errorf("%s %s %s: %+v, want %+v", tc.from, tc.to, tc.method, got, tc.want)
		}
	}
	if (Specificity{1, 0, 0}).Compare(Specificity{0, 2, 1}) != 1 || (Specificity{1, 1, 0}).Compare(Specificity{1, 1, 1}) != -1 || (Specificity{2, 1, 1}).Compare(Specificity{2, 1, 1}) != 0 {
		t.Error("Compare is not lexicographic, From first")
	}
	rules := []Rule{
		rule(t, "c", "allow", "*", "*", ""),
		rule(t, "b", "deny", "alice", "laptop/*", ""),
		rule(t, "a", "allow", "alice", "laptop/*", ""),
		rule(t, "d", "allow", "alice/phone", "*", ""),
	}
	SortRules(rules)
	var ids []string
	for _, r := range rules {
		ids = append(ids, r.ID)
	}
	if got := strings.Join(ids, ","); got != "d,a,b,c" {
		t.Errorf("sorted %s, want d,a,b,c", got)
	}
}

// listFunc is a RuleLister from a function.
type listFunc func(bucket, prefix string, fn func(zsync.Record) error) error

func (f listFunc) List(bucket, prefix string, fn func(zsync.Record) error) error {
	return f(bucket, prefix, fn)
}

func TestPolicyLoadRules(t *testing.T) {
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	good, _ := json.Marshal(Rule{ID: "good", From: "bob", To: "laptop/*", Method: "get", Effect: "allow", Created: created})
	records := []zsync.Record{
		{Bucket: "policy", Key: "good", Value: good},
		{Bucket: "policy", Key: "noid", Value: []byte(`{"from":"` + strings.ToLower(strings.ReplaceAll(testZoneID, "-", "")) + `","to":"*","effect":"deny","extra":1}`)},
		{Bucket: "policy", Key: "json", Value: []byte(`not json`)},
		{Bucket: "policy", Key: "other", Value: []byte(`{"id":"else","from":"*","to":"*","effect":"allow"}`)},
		{Bucket: "policy", Key: "who", Value: []byte(`{"from":"a/b/c/d","to":"*","effect":"allow"}`)},
		{Bucket: "policy", Key: "Bad Key", Value: []byte(`{"from":"*","to":"*","effect":"allow"}`)},
		{Bucket: "policy", Key: "gone", Deleted: true},
	}
	var asked string
	s := listFunc(func(bucket, prefix string, fn func(zsync.Record) error) error {
		asked = bucket + "/" + prefix
		for _, r := range records {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	})
	rules, skipped, err := LoadRules(s)
	if err != nil || asked != "policy/" {
		t.Fatalf("LoadRules: %v (listed %q)", err, asked)
	}
	want := []Rule{
		{ID: "good", From: "bob", To: "laptop/*", Method: "get", Effect: "allow", Created: created},
		{ID: "noid", From: testZoneID, To: "*", Method: "*", Effect: "deny"},
	}
	if len(rules) != len(want) || rules[0] != want[0] || rules[1] != want[1] {
		t.Errorf("rules %+v, want %+v", rules, want)
	}
	var msgs []string
	for _, e := range skipped {
		msgs = append(msgs, e.Error())
	}
	all := strings.Join(msgs, "\n")
	for _, w := range []string{`policy rule "json": not a rule in JSON`, `policy rule "other": its id is "else"`, `policy rule "who": invalid WHO`, `policy rule "Bad Key": invalid rule ID`} {
		if !strings.Contains(all, w) {
			t.Errorf("skipped:\n%s\nwant a line containing %q", all, w)
		}
	}
	if len(skipped) != 4 {
		t.Errorf("%d skipped, want 4", len(skipped))
	}

	boom := errors.New("boom")
	if _, _, err := LoadRules(listFunc(func(string, string, func(zsync.Record) error) error { return boom })); !errors.Is(err, boom) {
		t.Errorf("a failing store: %v, want it wrapped", err)
	}
}

// A rule survives its JSON record unchanged.
func TestPolicyRuleRecordRoundTrip(t *testing.T) {
	r := rule(t, "k3x9a2bq", "deny", testZoneID+"/tv/photos", "laptop/files", "get")
	r.Created = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"k3x9a2bq","from":"` + testZoneID + `/tv/photos","to":"laptop/files","method":"get","effect":"deny","created":"2025-06-01T12:00:00Z"}`; string(b) != want {
		t.Errorf("JSON %s\nwant %s", b, want)
	}
	got, err := DecodeRule(r.ID, b)
	if err != nil || got != r {
		t.Errorf("DecodeRule: %+v, %v; want %+v", got, err, r)
	}
}

// FuzzParseRule: ParseRule never panics, its output is canonical (parsing
// it again gives it back), and what it accepts Decide can match.
func FuzzParseRule(f *testing.F) {
	for _, s := range [][4]string{
		{"*", "*", "", "allow"}, {"alice/phone/notes", "laptop/files", "get", "deny"}, {testZoneID + "/tv", "hub/*", "*", "allow"},
		{"a/b/c/d", "x", " ", "maybe"}, {"*/x", "*/y", "*", "deny"}, {"", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, from, to, method, effect string) {
		r, err := ParseRule(from, to, method, effect)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		again, err := ParseRule(r.From, r.To, r.Method, r.Effect)
		if err != nil || again != r {
			t.Fatalf("not canonical: %+v gives %+v, %v", r, again, err)
		}
		if _, ok := compile(r); !ok {
			t.Fatalf("accepted a rule Decide cannot use: %+v", r)
		}
		// The rule matches the request it names most narrowly.
		w, _ := parseWho(r.From)
		tg, _ := parseTarget(r.To)
		req := Request{FromZone: w.zone, FromZoneID: string(w.zoneID), FromDevice: w.device, FromApp: w.app, ToDevice: tg.device, ToService: tg.service, Method: r.Method}
		if req.FromZone == "" && req.FromZoneID == "" {
			req.FromZone = "z"
		}
		r.ID = "r"
		if d := Decide([]Rule{r}, req); d.Rule == nil {
			t.Fatalf("rule %+v does not match %+v", r, req)
		}
		if w.zoneID != "" {
			if _, err := certs.ParseZoneID(string(w.zoneID)); err != nil {
				t.Fatalf("zone ID %q does not parse: %v", w.zoneID, err)
			}
		}
	})
}

func TestPolicyFriendZones(t *testing.T) {
	// A call out, from alice's phone to a service in friend zone bob.
	out := Request{FromZone: "alice", FromDevice: "phone", FromApp: "notes", ToZone: "bob", ToZoneID: testZoneID, ToDevice: "laptop", ToService: "files", Method: "get", SameZone: true}
	// The same service asked for within the zone.
	in := out
	in.ToZone, in.ToZoneID = "", ""
	for _, tc := range []struct {
		name   string
		rules  []Rule
		req    Request
		allow  bool
		reason string
	}{
		{"call out by default", nil, out, true, "call out to its friends"},
		{"own-zone rule does not reach out", []Rule{rule(t, "r", "deny", "alice/phone", "laptop/files", "")}, out, true, "default"},
		{"friend-zone rule does not reach in", []Rule{rule(t, "r", "deny", "alice/phone", "bob/laptop/files", "")}, in, true, "default"},
		{"deny a friend's service", []Rule{rule(t, "r", "deny", "alice/phone", "bob/laptop/files", "")}, out, false, "rule r"},
		{"deny a friend's device", []Rule{rule(t, "r", "deny", "alice", "bob/laptop/*", "")}, out, false, "rule r"},
		{"deny a whole friend zone", []Rule{rule(t, "r", "deny", "alice", "bob/*/*", "")}, out, false, "rule r"},
		{"friend zone by ID", []Rule{rule(t, "r", "deny", "alice", testZoneID+"/*/*", "")}, out, false, "rule r"},
		{"other friend", []Rule{rule(t, "r", "deny", "alice", "carol/*/*", "")}, out, true, "default"},
		{"star reaches out", []Rule{rule(t, "r", "deny", "alice/phone", "*", "")}, out, false, "rule r"},
		{"device beats zone", []Rule{rule(t, "a", "deny", "alice", "bob/*/*", ""), rule(t, "b", "allow", "alice/phone", "bob/*/*", "")}, out, true, "rule b"},
		{"service beats zone", []Rule{rule(t, "a", "deny", "alice/phone", "bob/*/*", ""), rule(t, "b", "allow", "alice/phone", "bob/laptop/files", "")}, out, true, "rule b"},
		{"no transit", []Rule{rule(t, "r", "allow", "*", "*", "")}, func() Request { r := out; r.FromZone, r.SameZone = "carol", false; return r }(), false, "do not transit"},
	} {
		d := Decide(tc.rules, tc.req)
		if d.Allow != tc.allow || !strings.Contains(d.Reason, tc.reason) {
			t.Errorf("%s: %+v, want allow %v with %q", tc.name, d, tc.allow, tc.reason)
		}
	}
	// What the hoster's zone sees: a friend by petname, or by zone ID.
	friend := Request{FromZone: "alice", FromZoneID: testZoneID, FromDevice: "phone", ToDevice: "laptop", ToService: "files"}
	if d := Decide(nil, friend); d.Allow {
		t.Errorf("friend by default: %+v", d)
	}
	if d := Decide([]Rule{rule(t, "r", "allow", "alice", "laptop/files", "")}, friend); !d.Allow {
		t.Errorf("friend allowed by petname: %+v", d)
	}
	if d := Decide([]Rule{rule(t, "r", "allow", testZoneID+"/phone", "laptop/*", "")}, friend); !d.Allow {
		t.Errorf("friend allowed by zone ID: %+v", d)
	}
}
