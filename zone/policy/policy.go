// Package policy is the zone's call policy: rules that say who may call
// which service, their parsing and canonical form, and the decision for one
// request. It is pure logic, shared by the hub and every device, which each
// decide with the same rules; it holds no state and does no I/O beyond
// reading rules through a RuleLister.
package policy

import (
	"cmp"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
)

// Policy rules say who may call which service. They are records of the
// hub-only bucket zsync.BucketPolicy, key = rule ID, value = a Rule in
// JSON, so every device holds the same rules and evaluates them itself:
// the requester's peer before sending a call, the hoster's peer before
// delivering it (docs/PROTOCOL.md, "Policy rules").
//
// This file is pure logic: parsing, matching and the decision. Reading
// the rules from a store is LoadRules; writing them is the CLI's job,
// through the hub's data endpoints.
//
// Decision order:
//
//  1. Only rules that match the request count. WHO matches the caller
//     (* anyone; ZONE its zone, by name or zone ID; ZONE/DEVICE and
//     ZONE/DEVICE/APP also its device and application). TARGET matches
//     the service (* any, in any zone; DEVICE/* any service of that
//     device and DEVICE/SERVICE that one, in this zone; ZONE/*/*,
//     ZONE/DEVICE/* and ZONE/DEVICE/SERVICE the same in a friend zone,
//     which is how a zone rules its own devices' calls out). The method
//     matches when the rule's is * (any) or equal to the request's.
//  2. The most specific matching rule decides. Specificity is compared
//     field by field, WHO first: app (3) > device (2) > zone (1) > * (0);
//     then TARGET: a service (3) > a device's services (2) > a friend
//     zone's services (1) > * (0); then the method: exact (1) > any (0).
//     So a rule about one application beats a rule about its whole
//     device whatever their targets.
//  3. Between matching rules equally specific, deny beats allow.
//  4. When no rule matches, the default decides: a zone's own devices may
//     use each other's services, and call out to friend zones (whose
//     own policy decides there); other zones may use nothing.

// Effects of a rule.
const (
	EffectAllow = "allow"
	EffectDeny  = "deny"
)

// Limits of the names in a rule, with why.
const (
	// maxServiceName bounds service and application names: the same
	// 1-64 characters the apps and appdata buckets allow an app name.
	maxServiceName = 64
	// maxMethod bounds a method name: a name, not data.
	maxMethod = 128
	// maxRuleID bounds a given rule ID: IDs are typed by people and are
	// keys of the policy bucket.
	maxRuleID = 64
	// ruleIDBytes is the randomness of a generated ID: 40 bits, eight
	// base32 characters, short enough to type and, in a bucket of a few
	// hundred rules, colliding about once in ten million additions (the
	// CLI checks anyway).
	ruleIDBytes = 5
	// zoneIDChars is the length of a zone ID without its dashes
	// (docs/PROTOCOL.md §2.1): a WHO of that length that is not an ID
	// is told why not as an ID, any other as a name.
	zoneIDChars = 33
)

// Default reasons, as a Decision names them.
const (
	reasonSameZone  = "default: devices of a zone may use each other's services"
	reasonOtherZone = "default: other zones may use nothing until a rule allows it"
	reasonCallOut   = "default: a zone's devices may call out to its friends (the friend's policy decides there)"
	reasonTransit   = "calls from other zones do not transit to third zones"
)

// Rule is one policy rule, stored as JSON in bucket policy under its ID.
// From, To and Method are in the canonical form ParseRule returns.
type Rule struct {
	ID string `json:"id"`
	// From is WHO: "*", "ZONE", "ZONE/DEVICE" or "ZONE/DEVICE/APP". ZONE
	// is a zone name or a zone ID (display form, e.g. "GOPC-76IX-…-E").
	From string `json:"from"`
	// To is TARGET: "*", "DEVICE/*" or "DEVICE/SERVICE" in this zone,
	// or "ZONE/*/*", "ZONE/DEVICE/*" or "ZONE/DEVICE/SERVICE" in a friend
	// zone (its petname or zone ID).
	To string `json:"to"`
	// Method is "*" for any method ("" is read the same), else one name.
	Method  string    `json:"method"`
	Effect  string    `json:"effect"` // EffectAllow or EffectDeny
	Created time.Time `json:"created"`
}

// Request is a call as policy sees it.
type Request struct {
	// FromZone is the caller's zone name as this zone knows it: its own
	// name for its own devices, a friend's petname otherwise; never a name
	// the caller claims for itself. Set it within the zone too, so rules
	// naming the zone by name match.
	FromZone string
	// FromDevice and FromApp are the calling device and application
	// (FromApp empty when no application is known: then only rules
	// without an app match).
	FromDevice, FromApp string
	// ToDevice, ToService and Method are what is called.
	ToDevice, ToService, Method string
	// SameZone says the caller is a device of the hoster's zone: it picks
	// the default when no rule matches.
	SameZone bool
	// FromZoneID is the caller's zone ID, from its certificate, in any
	// form certs.ParseZoneID accepts; optional. Rules naming a zone by ID
	// match it (or FromZone, if that is a zone ID).
	FromZoneID string
	// ToZone and ToZoneID name the service's zone when it is a friend's
	// (a call out): its petname and zone ID. Empty: this zone.
	ToZone, ToZoneID string
}

// Decision is the outcome of Decide.
type Decision struct {
	Allow bool `json:"allow"`
	// Rule is the rule that decided; nil when the default did.
	Rule *Rule `json:"rule,omitempty"`
	// Reason names the rule ("rule ID (deny from … to …)") or the default
	// ("default: …"), for the error a denied caller sees and for logs.
	Reason string `json:"reason"`
}

// Specificity ranks how precisely a rule names a call; see Decide.
type Specificity struct {
	From   int // 3 app, 2 device, 1 zone, 0 anyone
	To     int // 3 service, 2 every service of a device, 1 every service of a friend zone, 0 anything
	Method int // 1 one method, 0 any
}

// Compare orders specificities field by field, From first: -1 when s is
// less specific than t, 0 when equal, +1 when more.
func (s Specificity) Compare(t Specificity) int {
	return cmp.Or(cmp.Compare(s.From, t.From), cmp.Compare(s.To, t.To), cmp.Compare(s.Method, t.Method))
}

// Specificity of r, from the shape of its fields (a rule in canonical
// form; see ParseRule).
func (r Rule) Specificity() Specificity {
	var s Specificity
	if r.From != "*" && r.From != "" {
		s.From = strings.Count(r.From, "/") + 1
	}
	switch {
	case r.To == "*" || r.To == "":
	case strings.HasSuffix(r.To, "/*/*"):
		s.To = 1
	case strings.HasSuffix(r.To, "/*"):
		s.To = 2
	default:
		s.To = 3
	}
	if !anyMethod(r.Method) {
		s.Method = 1
	}
	return s
}

// String describes r for people: "deny from alice/phone to laptop/files
// method get".
func (r Rule) String() string {
	m := ""
	if !anyMethod(r.Method) {
		m = " method " + r.Method
	}
	return fmt.Sprintf("%s from %s to %s%s", r.Effect, r.From, r.To, m)
}

func anyMethod(m string) bool { return m == "" || m == "*" }

// who is a parsed WHO.
type who struct {
	anyone bool
	zone   string       // a zone name, or "" when zoneID is set
	zoneID certs.ZoneID // a zone ID (display form), or ""
	device string       // "" for a whole zone
	app    string       // "" for a whole device
}

// String is the canonical form of w.
func (w who) String() string {
	if w.anyone {
		return "*"
	}
	s := w.zone
	if w.zoneID != "" {
		s = string(w.zoneID)
	}
	for _, p := range []string{w.device, w.app} {
		if p != "" {
			s += "/" + p
		}
	}
	return s
}

const whoForms = "use *, ZONE, ZONE/DEVICE or ZONE/DEVICE/APP"

// parseWho parses a rule's From.
func parseWho(s string) (who, error) {
	if s == "*" {
		return who{anyone: true}, nil
	}
	parts := strings.Split(s, "/")
	if s == "" || len(parts) > 3 {
		return who{}, fmt.Errorf("invalid WHO %q: %s", s, whoForms)
	}
	var w who
	z := parts[0]
	if z == "*" {
		return who{}, fmt.Errorf("invalid WHO %q: the zone cannot be * when a device is named; %s", s, whoForms)
	}
	// A zone ID first: every spelling ParseZoneID accepts (its dashes
	// left out, or in lower case) is the ID, whatever else it could be. A
	// zone name it would take for an ID has 33 letters and digits 2-7
	// with the right check character: no name a person picks.
	if id, err := certs.ParseZoneID(z); err == nil {
		w.zoneID = id
	} else if nerr := certs.ValidateName("zone", z); nerr != nil {
		if len(strings.ReplaceAll(z, "-", "")) != zoneIDChars {
			err = fmt.Errorf("%v; or a zone ID", nerr) // not an ID's length: say what a name is
		}
		return who{}, fmt.Errorf("invalid WHO %q: %w", s, err)
	} else {
		w.zone = z
	}
	if len(parts) > 1 {
		if parts[1] == "*" {
			return who{}, fmt.Errorf("invalid WHO %q: for every device of a zone write the zone alone", s)
		}
		if err := certs.ValidateName("device", parts[1]); err != nil {
			return who{}, fmt.Errorf("invalid WHO %q: %w", s, err)
		}
		w.device = parts[1]
	}
	if len(parts) > 2 {
		if parts[2] == "*" {
			return who{}, fmt.Errorf("invalid WHO %q: for every app of a device write ZONE/DEVICE", s)
		}
		if err := checkServiceName("app", parts[2]); err != nil {
			return who{}, fmt.Errorf("invalid WHO %q: %w", s, err)
		}
		w.app = parts[2]
	}
	return w, nil
}

// target is a parsed TARGET.
type target struct {
	anything bool
	zone     string       // a friend's petname, or "" (this zone, or zoneID)
	zoneID   certs.ZoneID // a friend's zone ID (display form), or ""
	device   string       // "" for every device of a friend zone
	service  string       // "" for every service of device
}

func (t target) String() string {
	if t.anything {
		return "*"
	}
	s := ""
	switch {
	case t.zoneID != "":
		s = string(t.zoneID) + "/"
	case t.zone != "":
		s = t.zone + "/"
	}
	switch {
	case t.device == "":
		return s + "*/*"
	case t.service == "":
		return s + t.device + "/*"
	}
	return s + t.device + "/" + t.service
}

const targetForms = "use *, DEVICE/SERVICE or DEVICE/* in this zone, or ZONE/DEVICE/SERVICE, ZONE/DEVICE/* or ZONE/*/* in a friend zone"

// parseTarget parses a rule's To.
func parseTarget(s string) (target, error) {
	if s == "*" {
		return target{anything: true}, nil
	}
	parts := strings.Split(s, "/")
	var t target
	switch len(parts) {
	case 2:
	case 3:
		z := parts[0]
		if id, err := certs.ParseZoneID(z); err == nil {
			t.zoneID = id
		} else if err := certs.ValidateName("zone", z); err != nil {
			return target{}, fmt.Errorf("invalid TARGET %q: zone: %w", s, err)
		} else {
			t.zone = z
		}
		parts = parts[1:]
		if parts[0] == "*" {
			if parts[1] != "*" {
				return target{}, fmt.Errorf("invalid TARGET %q: for one service, name its device; for the whole zone write ZONE/*/*", s)
			}
			return t, nil
		}
	default:
		return target{}, fmt.Errorf("invalid TARGET %q: %s", s, targetForms)
	}
	dev, svc := parts[0], parts[1]
	if err := certs.ValidateName("device", dev); err != nil {
		return target{}, fmt.Errorf("invalid TARGET %q: %w", s, err)
	}
	t.device = dev
	if svc == "*" {
		return t, nil
	}
	if err := checkServiceName("service", svc); err != nil {
		return target{}, fmt.Errorf("invalid TARGET %q: %w", s, err)
	}
	t.service = svc
	return t, nil
}

// checkServiceName validates a service or application name: 1-64
// lower-case letters, digits, '-', '_' and '.'.
func checkServiceName(what, name string) error {
	ok := len(name) > 0 && len(name) <= maxServiceName
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	if !ok {
		return fmt.Errorf("invalid %s name %q: use 1-%d lower-case letters, digits, '-', '_' and '.'", what, name, maxServiceName)
	}
	return nil
}

// parseMethod returns the canonical method: "*" for any.
func parseMethod(m string) (string, error) {
	if anyMethod(m) {
		return "*", nil
	}
	if len(m) > maxMethod || !utf8.ValidString(m) ||
		strings.ContainsFunc(m, func(r rune) bool { return r == '*' || unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return "", fmt.Errorf("invalid method %q: use * for any method, or one method name of at most %d characters without spaces or '*'", m, maxMethod)
	}
	return m, nil
}

// ParseRule checks a rule's fields and returns the rule in canonical form,
// without ID or creation time. from is WHO, to is TARGET, method "" or "*"
// for any, effect EffectAllow or EffectDeny.
func ParseRule(from, to, method, effect string) (Rule, error) {
	w, err := parseWho(from)
	if err != nil {
		return Rule{}, err
	}
	t, err := parseTarget(to)
	if err != nil {
		return Rule{}, err
	}
	m, err := parseMethod(method)
	if err != nil {
		return Rule{}, err
	}
	if effect != EffectAllow && effect != EffectDeny {
		return Rule{}, fmt.Errorf("invalid effect %q: use %s or %s", effect, EffectAllow, EffectDeny)
	}
	return Rule{From: w.String(), To: t.String(), Method: m, Effect: effect}, nil
}

// CheckRuleID validates a rule ID: 1-64 lower-case letters, digits, '-'
// and '_'.
func CheckRuleID(id string) error {
	ok := len(id) > 0 && len(id) <= maxRuleID
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
	}
	if !ok {
		return fmt.Errorf("invalid rule ID %q: use 1-%d lower-case letters, digits, '-' and '_'", id, maxRuleID)
	}
	return nil
}

var ruleIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewRuleID returns a random rule ID: eight lower-case base32 characters.
func NewRuleID() string {
	b := make([]byte, ruleIDBytes)
	rand.Read(b) // never fails (crypto/rand, Go 1.24 and later)
	return ruleIDEncoding.EncodeToString(b)
}

// DecodeRule reads the record (key, value) of bucket policy: a Rule in
// JSON whose id, when present, is the key. It returns the rule in
// canonical form, or why the record is not a rule.
func DecodeRule(key string, value []byte) (Rule, error) {
	var r Rule
	if err := json.Unmarshal(value, &r); err != nil {
		return Rule{}, fmt.Errorf("policy rule %q: not a rule in JSON: %w", key, err)
	}
	if r.ID == "" {
		r.ID = key
	}
	if r.ID != key {
		return Rule{}, fmt.Errorf("policy rule %q: its id is %q, not its key", key, r.ID)
	}
	if err := CheckRuleID(r.ID); err != nil {
		return Rule{}, fmt.Errorf("policy rule %q: %w", key, err)
	}
	c, err := ParseRule(r.From, r.To, r.Method, r.Effect)
	if err != nil {
		return Rule{}, fmt.Errorf("policy rule %q: %w", key, err)
	}
	c.ID, c.Created = r.ID, r.Created
	return c, nil
}

// RuleLister is what LoadRules needs of a store: a *zsync.Store.
type RuleLister interface {
	List(bucket, prefix string, fn func(zsync.Record) error) error
}

// LoadRules reads every rule of bucket policy from s. A record that is
// not a valid rule is left out and reported in skipped, so one bad record
// does not take every other rule with it; err is a failure to read.
func LoadRules(s RuleLister) (rules []Rule, skipped []error, err error) {
	err = s.List(zsync.BucketPolicy, "", func(rec zsync.Record) error {
		if rec.Deleted {
			return nil
		}
		r, err := DecodeRule(rec.Key, rec.Value)
		if err != nil {
			skipped = append(skipped, err)
			return nil
		}
		rules = append(rules, r)
		return nil
	})
	if err != nil {
		return nil, skipped, fmt.Errorf("read policy rules: %w", err)
	}
	return rules, skipped, nil
}

// SortRules orders rules most specific first, then by ID: the order in
// which they take precedence (but for deny winning a tie).
func SortRules(rules []Rule) {
	slices.SortStableFunc(rules, func(a, b Rule) int {
		return cmp.Or(b.Specificity().Compare(a.Specificity()), cmp.Compare(a.ID, b.ID))
	})
}

// matcher is a rule parsed for matching.
type matcher struct {
	from   who
	to     target
	method string // "*" for any
}

func compile(r Rule) (matcher, bool) {
	w, err := parseWho(r.From)
	if err != nil {
		return matcher{}, false
	}
	t, err := parseTarget(r.To)
	if err != nil {
		return matcher{}, false
	}
	m, err := parseMethod(r.Method)
	if err != nil || r.Effect != EffectAllow && r.Effect != EffectDeny {
		return matcher{}, false
	}
	return matcher{from: w, to: t, method: m}, true
}

// caller is a request's zones, resolved once per decision.
type caller struct {
	name string // FromZone
	id   string // compact zone ID, from FromZoneID or FromZone, or ""
	// toID is the compact ID of the service's zone when it is a friend's
	// (from ToZoneID or ToZone), or "".
	toID string
}

func (m matcher) matches(c caller, req Request) bool {
	w := m.from
	if !w.anyone {
		if w.zoneID != "" && w.zoneID.Compact() != c.id || w.zoneID == "" && w.zone != c.name {
			return false
		}
		if w.device != "" && w.device != req.FromDevice || w.app != "" && w.app != req.FromApp {
			return false
		}
	}
	if !m.to.anything {
		// A target names this zone or a friend's: it matches only calls
		// into that zone.
		out := req.ToZone != "" || req.ToZoneID != ""
		named := m.to.zone != "" || m.to.zoneID != ""
		if out != named || m.to.zoneID != "" && m.to.zoneID.Compact() != c.toID || m.to.zoneID == "" && m.to.zone != req.ToZone {
			return false
		}
		if m.to.device != "" && m.to.device != req.ToDevice || m.to.service != "" && m.to.service != req.ToService {
			return false
		}
	}
	return m.method == "*" || m.method == req.Method
}

// Decide applies rules to req; see the top of this file for the order. A
// rule that is not valid (ParseRule would refuse it) never matches.
func Decide(rules []Rule, req Request) Decision {
	c := caller{name: req.FromZone, id: certs.FirstZoneID(req.FromZoneID, req.FromZone), toID: certs.FirstZoneID(req.ToZoneID, req.ToZone)}
	var best *Rule
	var bestSpec Specificity
	for i := range rules {
		r := &rules[i]
		m, ok := compile(*r)
		if !ok || !m.matches(c, req) {
			continue
		}
		s := r.Specificity()
		if best == nil {
			best, bestSpec = r, s
			continue
		}
		switch s.Compare(bestSpec) {
		case 1:
			best, bestSpec = r, s
		case 0:
			// Deny wins a tie; between equals, the smaller ID, so the
			// rule named does not depend on the order of rules.
			if r.Effect == EffectDeny && best.Effect == EffectAllow || r.Effect == best.Effect && r.ID < best.ID {
				best = r
			}
		}
	}
	out := req.ToZone != "" || req.ToZoneID != ""
	if out && !req.SameZone {
		return Decision{Allow: false, Reason: reasonTransit} // whatever the rules say
	}
	if best == nil {
		switch {
		case out:
			return Decision{Allow: true, Reason: reasonCallOut}
		case req.SameZone:
			return Decision{Allow: true, Reason: reasonSameZone}
		}
		return Decision{Allow: false, Reason: reasonOtherZone}
	}
	r := *best
	return Decision{Allow: r.Effect == EffectAllow, Rule: &r, Reason: fmt.Sprintf("rule %s (%s)", r.ID, r)}
}

// ParseRequest turns the words of a check (pzh policy check, the
// dashboard) into the call they name: from is ZONE/DEVICE or
// ZONE/DEVICE/APP, to is DEVICE/SERVICE, method one name or "" for none
// (then only rules for any method match). No wildcards: a check is about
// one call. The caller is of another zone until SameZoneAs says otherwise.
func ParseRequest(from, to, method string) (Request, error) {
	if from == "" || to == "" {
		return Request{}, fmt.Errorf("--from ZONE/DEVICE[/APP] and --to DEVICE/SERVICE are required")
	}
	r, err := ParseRule(from, to, method, EffectAllow)
	if err != nil {
		return Request{}, err
	}
	who := strings.Split(r.From, "/")
	if len(who) < 2 {
		return Request{}, fmt.Errorf("--from %q: name one caller, ZONE/DEVICE or ZONE/DEVICE/APP", from)
	}
	dev, svc, _ := strings.Cut(r.To, "/")
	if r.To == "*" || svc == "*" || strings.Contains(svc, "/") {
		return Request{}, fmt.Errorf("--to %q: name one service, DEVICE/SERVICE", to)
	}
	if method == "*" {
		return Request{}, fmt.Errorf("--method: name one method, or leave it out")
	}
	req := Request{FromDevice: who[1], ToDevice: dev, ToService: svc, Method: method}
	if len(who) == 3 {
		req.FromApp = who[2]
	}
	if id, err := certs.ParseZoneID(who[0]); err == nil {
		req.FromZoneID = string(id)
	} else {
		req.FromZone = who[0]
	}
	return req, nil
}

// SameZoneAs completes req for a caller of the zone named name with ID id,
// when the request names it by either: then both are known, and the
// default is the zone's own.
func (req *Request) SameZoneAs(name string, id certs.ZoneID) {
	byID := req.FromZoneID != "" && certs.ZoneID(req.FromZoneID).Compact() == id.Compact()
	if req.FromZone == name || byID {
		req.FromZone, req.FromZoneID, req.SameZone = name, string(id), true
	}
}
