package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/wire"
)

// Friends: zones this hub federates with. Making friends is the friend
// invite exchange (ALPN pz-friend/1, docs/PROTOCOL.md "Friends"); being
// friends is a record of the other zone's CA certificate, kept in pzh.db,
// published to this zone's devices in the friends bucket, and a link
// between the two hubs (links.go) over which calls cross (federation.go).

// Friend limits, with why.
const (
	// maxFriendAddrs bounds the hub addresses a friend may announce, as a
	// token may carry.
	maxFriendAddrs = 8
	// maxFriendAddrLen: a host name and port.
	maxFriendAddrLen = 255
	// maxPetnameTries bounds the search for a free default petname
	// (zone, zone-2, zone-3, ...).
	maxPetnameTries = 100
)

// errBadFriend marks friend requests refused for what they ask.
var errBadFriend = errors.New("bad friend request")

func (f *FriendRecord) entry() *wire.Friend {
	return &wire.Friend{Petname: f.Petname, ID: f.ZoneID, CA: f.ca}
}

// ---- the hub's friend table ----

// friends is the zone's table of friend zones and what changes it:
// friend invites, redeeming and accepting them, removal and renaming, and
// the admin API's views. Its lock guards the table only; changeMu
// serialises whole changes (store, table, zone state), so a removal cannot
// be undone by a rename racing it. The links take their lock before this
// one.
type friends struct {
	h *Hub

	changeMu sync.Mutex
	mu       sync.Mutex
	byZone   map[string]*FriendRecord // by compact zone ID
}

// zones lists the friends' compact zone IDs.
func (fs *friends) zones() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]string, 0, len(fs.byZone))
	for z := range fs.byZone {
		out = append(out, z)
	}
	return out
}

// records lists the friends' records.
func (fs *friends) records() []*FriendRecord {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]*FriendRecord, 0, len(fs.byZone))
	for _, f := range fs.byZone {
		out = append(out, f)
	}
	return out
}

// count is the number of friends.
func (fs *friends) count() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.byZone)
}

// loadFriends reads the friend records at start and brings the friends
// bucket in step with them.
func (fs *friends) load() error {
	recs, err := fs.h.store.Friends()
	if err != nil {
		return fmt.Errorf("read friends: %w", err)
	}
	fs.mu.Lock()
	for _, f := range recs {
		fs.byZone[f.ZoneID.Compact()] = f
	}
	fs.mu.Unlock()
	for _, f := range recs {
		fs.publish(f)
	}
	fs.withdrawStale()
	return nil
}

// withdrawStale deletes the zone state's records of friends no longer
// kept.
func (fs *friends) withdrawStale() {
	var stale []zsync.Edit
	fs.h.state.List(zsync.BucketFriends, "", func(r zsync.Record) error {
		fs.mu.Lock()
		_, ok := fs.byZone[r.Key]
		fs.mu.Unlock()
		if !ok && !r.Deleted {
			stale = append(stale, zsync.Edit{Bucket: zsync.BucketFriends, Key: r.Key, Delete: true})
		}
		return nil
	})
	if len(stale) > 0 {
		if _, err := fs.h.state.Apply(stale); err != nil {
			fs.h.log.Warn("withdraw old friend records; tried again later", "err", err)
			fs.h.publishFails.Add(1)
			fs.h.republishLater()
		}
	}
}

func (fs *friends) publish(f *FriendRecord) {
	v, err := json.Marshal(wire.FriendInfo{Petname: f.Petname, Zone: f.Zone, ZoneID: f.ZoneID, CA: f.CA, Since: f.Added})
	if err != nil {
		return
	}
	fs.h.putState(zsync.BucketFriends, f.ZoneID.Compact(), v)
}

// knownZone reports whether zoneID is this zone or a friend's.
func (fs *friends) knownZone(zoneID string) bool {
	return zoneID == fs.h.zone.ID.Compact() || fs.get(zoneID) != nil
}

// petname is the friend's name for zone, or the zone ID itself.
func (fs *friends) petname(zone string) string {
	if f := fs.get(zone); f != nil {
		return f.Petname
	}
	return zone
}

// friend returns the friend with that compact zone ID, or nil.
func (fs *friends) get(zone string) *FriendRecord {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.byZone[zone]
}

// friendNamed finds a friend by petname or zone ID.
func (fs *friends) named(name string) *FriendRecord {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, f := range fs.byZone {
		if f.Petname == name {
			return f
		}
	}
	if id, err := certs.ParseZoneID(name); err == nil {
		return fs.byZone[id.Compact()]
	}
	return nil
}

// befriended records a new or renewed friendship in memory and in the
// zone state, and starts keeping a link to the friend.
func (fs *friends) add(f *FriendRecord) {
	zone := f.ZoneID.Compact()
	fs.h.publishMu.Lock()
	fs.mu.Lock()
	fs.byZone[zone] = f
	fs.mu.Unlock()
	fs.publish(f)
	fs.h.publishMu.Unlock()
	fs.h.links.start(zone)
	fs.h.changes.Bump()
	fs.h.log.Info("friend added", "petname", f.Petname, "zone", f.Zone, "zone_id", f.ZoneID)
}

// looksLikeZoneID reports whether a name would be read as a zone ID
// (certs.ParseZoneID takes it): as a petname it would shadow that zone in
// addresses and policy rules.
func looksLikeZoneID(name string) bool {
	_, err := certs.ParseZoneID(name)
	return err == nil
}

// ruleZones lists, for each zone name policy rules use (in WHO or
// TARGET), the IDs of those rules: a new friend must not be handed a
// name that rules about an earlier one still use.
func (fs *friends) ruleZones() map[string][]string {
	out := map[string][]string{}
	for _, r := range fs.h.calls.Get(fs.h.state, fs.h.log).Rules {
		from, _, _ := strings.Cut(r.From, "/")
		out[from] = append(out[from], r.ID)
		if to := strings.Split(r.To, "/"); len(to) == 3 && to[0] != from {
			out[to[0]] = append(out[to[0]], r.ID)
		}
	}
	return out
}

// ruleZoneNames is the set of zone names rules use.
func (fs *friends) ruleZoneNames() map[string]bool {
	out := map[string]bool{}
	for z := range fs.ruleZones() {
		out[z] = true
	}
	return out
}

// rulesNaming lists the IDs of the rules that name zone name.
func (fs *friends) rulesNaming(name string) []string { return fs.ruleZones()[name] }

// checkPetname validates a petname for the friend of zone.
func (fs *friends) checkPetname(name string, zone certs.ZoneID) error {
	if err := certs.ValidateName("zone", name); err != nil {
		return fmt.Errorf("%w: petname: %w", errBadFriend, err)
	}
	if name == fs.h.zone.Name {
		return fmt.Errorf("%w: %q is this zone's own name; choose another name for the friend", errBadFriend, name)
	}
	if looksLikeZoneID(name) {
		return fmt.Errorf("%w: %q reads as a zone ID; choose a name that does not", errBadFriend, name)
	}
	if f := fs.named(name); f != nil && f.ZoneID != zone {
		return fmt.Errorf("%w: another friend is called %q already (zone %s)", errBadFriend, name, f.ZoneID)
	}
	return nil
}

// moved records the addresses a friend's hub says it listens at now
// (Addrs on the link), so that this hub dials them from now on.
func (fs *friends) moved(zone string, addrs []string) error {
	if len(addrs) == 0 || len(addrs) > maxFriendAddrs {
		return fmt.Errorf("addresses: %d of them, want 1 to %d", len(addrs), maxFriendAddrs)
	}
	for _, a := range addrs {
		if err := ValidateHubAddr(a); err != nil {
			return fmt.Errorf("addresses: %w", err)
		}
	}
	fs.changeMu.Lock()
	defer fs.changeMu.Unlock()
	f := fs.get(zone)
	if f == nil || slices.Equal(f.HubAddrs, addrs) {
		return nil
	}
	rec, err := fs.h.store.SetFriendAddrs(f.ZoneID, addrs)
	if err != nil {
		fs.h.log.Warn("record a friend's new addresses", "friend", f.Petname, "err", err)
		return nil // kept as they were; told again on the next link
	}
	fs.mu.Lock()
	fs.byZone[zone] = rec
	fs.mu.Unlock()
	fs.h.changes.Bump()
	fs.h.log.Info("friend's hub addresses changed", "friend", f.Petname, "was", f.HubAddrs, "now", addrs)
	return nil
}

// ---- friend invites ----

func friendInviteView(inv *pairing.Invite, now time.Time) api.FriendInviteView {
	v := inviteView(inv, now)
	f := api.FriendInviteView{ID: v.ID, State: v.State, Created: v.Created, Expires: v.Expires, CodeNumber: inv.CodeNumber, WrongCodes: inv.WrongCodes}
	if len(inv.Devices) > 0 {
		f.Friend = inv.Devices[0]
	}
	return f
}

func (fs *friends) createInvite(req api.FriendInviteRequest) (*api.FriendInviteView, error) {
	ttl, err := parseDurationField("ttl", req.TTL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadFriend, err)
	}
	if ttl == 0 {
		ttl = pairing.DefaultFriendTTL
	}
	if ttl <= 0 || ttl > pairing.MaxFriendTTL {
		return nil, fmt.Errorf("%w: friend invite ttl %v out of range: use more than 0 and at most %v", errBadFriend, ttl, pairing.MaxFriendTTL)
	}
	now := fs.h.cfg.Now()
	// A friend invite is a one-use invite with no device; its certificate
	// lifetime is unused.
	inv, secret, err := pairing.NewInvite(pairing.Template{Device: "friend", TTL: ttl, Uses: 1}, now)
	if err != nil {
		return nil, err
	}
	var code pairing.Code
	if req.Code {
		code.Secret = pairing.NewCodeSecret()
		inv.CodeSecret = code.Secret[:]
		if code.Number, err = fs.h.store.AddCodeInvite(bucketFriendInvites, inv, now, fs.h.holdCode(transport.ALPNFriendCode, inv)); err != nil {
			return nil, err
		}
	} else if err := fs.h.store.AddFriendInvite(inv); err != nil {
		return nil, err
	}
	tok := &pairing.Token{Addrs: fs.h.publicAddrs(), Zone: fs.h.zone.ID, InviteID: inv.ID, Secret: secret}
	fs.h.log.Info("friend invite created", "invite", inv.ID, "expires", inv.Expires, "code", code.Number)
	v := friendInviteView(inv, now)
	v.Token = tok.FriendString()
	if req.Code {
		v.Code = code.String()
	}
	return &v, nil
}

// hubChainTLS is the server side of pz-friend/1 and pz-link/1: the other
// hub presents its certificate chain [hub leaf, zone CA], checked here
// for consistency only. Whether that zone is a friend (links) or may
// become one (the invite proof) is decided after the handshake, where
// the refusal can say why.
func (h *Hub) hubChainTLS(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{transport.ALPNFriend, transport.ALPNFriendCode, transport.ALPNLink},
		GetCertificate: getCert,
		ClientAuth:     tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, _, err := certs.VerifyHubChain(raw, h.cfg.Now())
			return err
		},
	}
}

// hubClientCert presents this hub's chain to another hub.
func (h *Hub) hubClientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return h.cert.Load(), nil
}

// serveFriendInvite is the inviting side of pz-friend/1.
func (fs *friends) serveInvite(ctx context.Context, conn transport.Conn) {
	serveOneShot(ctx, conn, func(st transport.Stream) any {
		ip := remoteIP(conn.RemoteAddr())
		var req pairing.FriendRequest
		if err := transport.NewFrameReader(st, wire.MaxRequestFrame).ReadFrame(&req); err != nil {
			if ok, wait := fs.h.limiter.Allow(ip, fs.h.cfg.Now()); !ok {
				return &pairing.FriendResponse{Error: rateLimited(ip, wait).Error}
			}
			fs.h.limiter.Fail(ip, fs.h.cfg.Now())
			return &pairing.FriendResponse{Error: &pairing.Error{Code: pairing.CodeBadRequest, Message: "malformed friend request"}}
		}
		cs := conn.ConnectionState()
		if wait, limited := fs.h.overLimit(ip, req.InviteID, bucketFriendInvites, func(id string, verifier []byte) bool {
			return pairing.CheckFriendProof(cs, id, verifier, req.Proof)
		}); limited {
			return &pairing.FriendResponse{Error: rateLimited(ip, wait).Error}
		}
		return fs.redeem(conn, &req, ip, func(inv *pairing.Invite) bool {
			return pairing.CheckFriendProof(cs, inv.ID, inv.Verifier, req.Proof)
		})
	})
}

// redeem records the friendship req asks for under its invite, if check
// (nil: the caller has the proof already) takes the invite.
func (fs *friends) redeem(conn transport.Conn, req *pairing.FriendRequest, ip netip.Addr, check func(*pairing.Invite) bool) *pairing.FriendResponse {
	now := fs.h.cfg.Now()
	id, idErr := pairing.NormalizeInviteID(req.InviteID)
	fail := func(code, msg string) *pairing.FriendResponse {
		fs.h.limiter.Fail(ip, now)
		fs.h.log.Info("friend request refused", "remote", conn.RemoteAddr().String(), "invite", id, "code", code)
		return &pairing.FriendResponse{Error: &pairing.Error{Code: code, Message: msg}}
	}
	if req.Version != pairing.FriendProtocolVersion {
		return fail(pairing.CodeVersion, fmt.Sprintf("friend protocol version %d is not supported by this hub (it speaks %d): use matching pzh versions", req.Version, pairing.FriendProtocolVersion))
	}
	if idErr != nil {
		return fail(pairing.CodeInvalid, "friend invite not recognised: the token is wrong or for another hub")
	}
	cs := conn.ConnectionState()
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	ca, zone, err := certs.VerifyHubChain(raw, now)
	if err != nil {
		return fail(pairing.CodeBadRequest, err.Error())
	}
	if zone == fs.h.zone.ID {
		return fail(pairing.CodeBadRequest, "this is the zone's own friend token: give it to the other hub's owner")
	}
	if err := certs.ValidateName("zone", req.Zone); err != nil {
		return fail(pairing.CodeBadRequest, "bad zone name: "+err.Error())
	}
	if len(req.HubAddrs) == 0 || len(req.HubAddrs) > maxFriendAddrs {
		return fail(pairing.CodeBadRequest, fmt.Sprintf("name 1 to %d hub addresses", maxFriendAddrs))
	}
	for _, a := range req.HubAddrs {
		if len(a) == 0 || len(a) > maxFriendAddrLen {
			return fail(pairing.CodeBadRequest, "bad hub address")
		}
	}
	fs.changeMu.Lock()
	defer fs.changeMu.Unlock()
	prev := fs.get(zone.Compact())
	inRules := fs.ruleZoneNames() // read before the store's transaction
	rec, err := fs.h.store.RedeemFriend(id, func(inv *pairing.Invite, taken func(string, certs.ZoneID) bool) (*FriendRecord, error) {
		if check != nil && !check(inv) {
			return nil, errBadProof
		}
		if err := inv.Usable(now); err != nil {
			return nil, err
		}
		f := &FriendRecord{Zone: req.Zone, ZoneID: zone, CA: ca.Raw, HubAddrs: req.HubAddrs, Added: now.UTC(), Invited: true, ca: ca}
		if prev != nil {
			// Friends again (the other side forgot this one): keep the name.
			f.Petname = prev.Petname
			return f, nil
		}
		name := req.Zone
		if looksLikeZoneID(name) {
			name = "friend" // a name that reads as an ID would shadow that zone
		}
		for i := 2; name == fs.h.zone.Name || taken(name, zone) || inRules[name]; i++ {
			if i > maxPetnameTries {
				return nil, fmt.Errorf("no free petname for zone %q", req.Zone)
			}
			name = fmt.Sprintf("%s-%d", req.Zone, i)
			if len(name) > 63 || looksLikeZoneID(req.Zone) {
				name = fmt.Sprintf("friend-%d", i)
			}
		}
		f.Petname = name
		return f, nil
	})
	if code, msg, ok := inviteRefusal(err, "friend invite", "ask for a new one (pzh friend invite)"); ok {
		if errors.Is(err, errBadProof) {
			fs.h.limiter.FailInvite(ip, id, now) // a wrong proof counts against the invite too
		}
		return fail(code, msg)
	}
	if err != nil {
		fs.h.log.Error("friend request failed", "remote", conn.RemoteAddr().String(), "err", err)
		return &pairing.FriendResponse{Error: &pairing.Error{Code: pairing.CodeInternal, Message: "the hub could not complete the friendship; try again"}}
	}
	fs.add(rec)
	return &pairing.FriendResponse{Zone: fs.h.zone.Name, HubAddrs: fs.h.publicAddrs()}
}

// serveOneShot serves a connection that carries one request stream: the
// answer answer returns is written back, and the other side given a
// moment to read it and hang up.
func serveOneShot(ctx context.Context, conn transport.Conn, answer func(transport.Stream) any) {
	defer conn.CloseWithError(0, "done")
	ctx, cancel := context.WithTimeout(ctx, wire.StreamTimeout)
	defer cancel()
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	defer st.Reset()
	deadline, _ := ctx.Deadline()
	st.SetDeadline(deadline)
	if err := transport.WriteFrame(st, answer(st)); err != nil {
		return
	}
	lingerClose(conn, st)
}

// lingerClose closes st after its last frame and gives the other side a
// moment to read it and hang up before the caller closes conn.
func lingerClose(conn transport.Conn, st transport.Stream) {
	st.Close()
	select {
	case <-conn.Done():
	case <-time.After(wire.CloseLinger):
	}
}

// acceptFriend redeems another hub's friend token.
func (fs *friends) accept(ctx context.Context, req api.FriendAcceptRequest) (*api.FriendView, error) {
	if req.Code != "" || req.Addr != "" {
		return fs.acceptCode(ctx, req)
	}
	tok, err := pairing.ParseFriendToken(req.Token)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadFriend, err)
	}
	if tok.Zone == fs.h.zone.ID {
		return nil, fmt.Errorf("%w: this token is this zone's own (pzh friend invite made it here); give it to the other hub's owner", errBadFriend)
	}
	if f := fs.get(tok.Zone.Compact()); f != nil {
		return nil, fmt.Errorf("%w: zone %s is a friend already, as %q", ErrAlreadyDone, tok.Zone, f.Petname)
	}
	if err := fs.checkPetname(req.As, tok.Zone); err != nil {
		return nil, err
	}
	var errs []error
	for _, addr := range tok.Addrs {
		rec, err := fs.dialInvite(ctx, addr, tok, req.As)
		if err == nil {
			return fs.record(rec)
		}
		var perr *pairing.Error
		if errors.As(err, &perr) || errors.Is(err, pairing.ErrZoneMismatch) || ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return nil, fmt.Errorf("no address of the friend's hub answered (is its pzh serve running, and its port open for UDP or TCP?): %w", errors.Join(errs...))
}

// record keeps a friendship this hub redeemed the invite of.
func (fs *friends) record(rec *FriendRecord) (*api.FriendView, error) {
	fs.changeMu.Lock()
	defer fs.changeMu.Unlock()
	if err := fs.h.store.AddFriend(rec); err != nil {
		if errors.Is(err, ErrAlreadyDone) || errors.Is(err, errBadFriend) {
			return nil, err
		}
		// The other hub has recorded the friendship and spent its
		// invite; a new one makes friends again on both sides.
		return nil, fmt.Errorf("record the friendship: %w; the friend's hub has recorded it and its invite is used: once this is fixed, ask for a new friend invite", err)
	}
	fs.add(rec)
	v := fs.view(rec)
	v.Rules = fs.rulesNaming(rec.Petname)
	return &v, nil
}

// friendAt runs the redeeming side of pz-friend/1 against one address.
func (fs *friends) dialInvite(ctx context.Context, addr string, tok *pairing.Token, petname string) (*FriendRecord, error) {
	conf := pairing.PinnedHubTLS(tok.Zone, transport.ALPNFriend, nil)
	conf.GetClientCertificate = fs.h.hubClientCert
	conn, err := transport.Dial(ctx, addr, transport.ModeAuto, transport.Config{TLS: conf, Logger: fs.h.log})
	if err != nil {
		return nil, err
	}
	defer conn.CloseWithError(0, "done")
	// The CA the pinning check accepted, from this connection's own
	// handshake (with auto, two handshakes may have run).
	ca := conn.ConnectionState().PeerCertificates[1]
	ctx, cancel := context.WithTimeout(ctx, wire.StreamTimeout)
	defer cancel()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("open friend stream: %w", err)
	}
	defer st.Reset()
	deadline, _ := ctx.Deadline()
	st.SetDeadline(deadline)
	v := pairing.Verifier(tok.Secret)
	proof, err := pairing.FriendProof(conn.ConnectionState(), tok.InviteID, v[:])
	if err != nil {
		return nil, err
	}
	req := &pairing.FriendRequest{Version: pairing.FriendProtocolVersion, InviteID: tok.InviteID, Proof: proof, Zone: fs.h.zone.Name, HubAddrs: fs.h.publicAddrs()}
	if err := transport.WriteFrame(st, req); err != nil {
		return nil, fmt.Errorf("send friend request: %w", err)
	}
	var resp pairing.FriendResponse
	if err := transport.NewFrameReader(st, wire.MaxRequestFrame).ReadFrame(&resp); err != nil {
		return nil, fmt.Errorf("read friend response: %w", err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	if err := certs.ValidateName("zone", resp.Zone); err != nil {
		return nil, fmt.Errorf("the friend's hub sent a bad zone name: %w", err)
	}
	addrs := resp.HubAddrs
	if len(addrs) == 0 || len(addrs) > maxFriendAddrs {
		addrs = tok.Addrs
	}
	return &FriendRecord{Petname: petname, Zone: resp.Zone, ZoneID: tok.Zone, CA: ca.Raw, HubAddrs: addrs, Added: fs.h.cfg.Now().UTC(), ca: ca}, nil
}

// ---- removing and renaming ----

// removeFriend forgets a friend, withdraws it from the devices and ends
// the link, telling the other hub when it is linked.
func (fs *friends) remove(name, why string, reason wire.CloseReason) (*api.RemoveFriendResult, error) {
	fs.changeMu.Lock()
	defer fs.changeMu.Unlock()
	f := fs.named(name)
	if f == nil {
		return nil, fmt.Errorf("%w %q: pzh friends lists them", ErrNoFriend, name)
	}
	zone := f.ZoneID.Compact()
	if err := fs.h.store.RemoveFriend(f.ZoneID); err != nil {
		return nil, err
	}
	fs.h.publishMu.Lock()
	fs.mu.Lock()
	delete(fs.byZone, zone)
	fs.mu.Unlock()
	if _, err := fs.h.state.Delete(zsync.BucketFriends, zone); err != nil {
		fs.h.log.Warn("withdraw friend record; tried again later", "friend", f.Petname, "err", err)
		fs.h.publishFails.Add(1)
		fs.h.republishLater()
	}
	fs.h.publishMu.Unlock()
	told := fs.h.links.stop(zone, reason, why)
	dropped := fs.h.mail.Stat(outboxKey(zone)).n + fs.h.links.purgeFrom(zone)
	fs.h.links.dropOutbox(zone)
	fs.h.changes.Bump()
	rules := fs.rulesNaming(f.Petname)
	fs.h.log.Info("friend removed", "petname", f.Petname, "zone_id", f.ZoneID, "why", why, "queued_dropped", dropped, "rules_naming_it", rules)
	return &api.RemoveFriendResult{Petname: f.Petname, Told: told, Dropped: dropped, Rules: rules}, nil
}

func (fs *friends) rename(from, to string) (*api.FriendView, error) {
	fs.changeMu.Lock()
	defer fs.changeMu.Unlock()
	f := fs.named(from)
	if f == nil {
		return nil, fmt.Errorf("%w %q: pzh friends lists them", ErrNoFriend, from)
	}
	if err := fs.checkPetname(to, f.ZoneID); err != nil {
		return nil, err
	}
	rec, err := fs.h.store.RenameFriend(f.Petname, to)
	if err != nil {
		return nil, err
	}
	fs.mu.Lock()
	fs.byZone[rec.ZoneID.Compact()] = rec
	fs.mu.Unlock()
	fs.publish(rec)
	fs.h.changes.Bump()
	v := fs.view(rec)
	v.Rules, v.RulesOld = fs.rulesNaming(rec.Petname), fs.rulesNaming(f.Petname)
	return &v, nil
}

// ---- views and API ----

func (fs *friends) view(f *FriendRecord) api.FriendView {
	v := api.FriendView{Petname: f.Petname, Zone: f.Zone, ZoneID: f.ZoneID, HubAddrs: f.HubAddrs, Added: f.Added, Invited: f.Invited, State: "offline",
		Queue: fs.h.mail.Stat(outboxKey(f.ZoneID.Compact())).n}
	fs.h.links.view(f.ZoneID.Compact(), &v)
	return v
}

func (fs *friends) views(ver uint64) api.FriendsView {
	fs.mu.Lock()
	recs := make([]*FriendRecord, 0, len(fs.byZone))
	for _, f := range fs.byZone {
		recs = append(recs, f)
	}
	fs.mu.Unlock()
	out := api.FriendsView{Version: ver, Friends: []api.FriendView{}}
	for _, f := range recs {
		out.Friends = append(out.Friends, fs.view(f))
	}
	sort.Slice(out.Friends, func(i, j int) bool { return out.Friends[i].Petname < out.Friends[j].Petname })
	return out
}

func (fs *friends) routes(mux *http.ServeMux) {
	friendErr := func(w http.ResponseWriter, err error) {
		status := localapi.ErrStatus(err, []error{ErrNoFriend}, []error{ErrAlreadyDone})
		var perr *pairing.Error
		switch {
		case errors.Is(err, errBadFriend):
			status = http.StatusBadRequest
		case errors.As(err, &perr):
			status = http.StatusBadGateway // the friend's hub refused
		}
		localapi.WriteErr(w, status, err)
	}
	mux.HandleFunc("GET /v1/friends", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, fs.views(localapi.LongPoll(r, &fs.h.changes)))
	})
	mux.HandleFunc("POST /v1/friends/invites", func(w http.ResponseWriter, r *http.Request) {
		var req api.FriendInviteRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		v, err := fs.createInvite(req)
		if err != nil {
			friendErr(w, err)
			return
		}
		localapi.WriteJSON(w, http.StatusCreated, v)
	})
	mux.HandleFunc("GET /v1/friends/invites", func(w http.ResponseWriter, r *http.Request) {
		now := fs.h.cfg.Now()
		invs, err := fs.h.store.FriendInvites(now)
		if err != nil {
			localapi.WriteErr(w, http.StatusInternalServerError, err)
			return
		}
		out := []api.FriendInviteView{}
		for _, inv := range invs {
			out = append(out, friendInviteView(inv, now))
		}
		localapi.WriteJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("DELETE /v1/friends/invites/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := pairing.NormalizeInviteID(r.PathValue("id"))
		if err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		inv, err := fs.h.store.CancelFriendInvite(id)
		if err != nil {
			localapi.WriteErr(w, localapi.ErrStatus(err, []error{ErrNoInvite}, []error{ErrAlreadyDone}), err)
			return
		}
		fs.h.log.Info("friend invite cancelled", "invite", id)
		localapi.WriteJSON(w, http.StatusOK, friendInviteView(inv, fs.h.cfg.Now()))
	})
	mux.HandleFunc("POST /v1/friends", func(w http.ResponseWriter, r *http.Request) {
		var req api.FriendAcceptRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*wire.StreamTimeout)
		defer cancel()
		v, err := fs.accept(ctx, req)
		if err != nil {
			friendErr(w, err)
			return
		}
		localapi.WriteJSON(w, http.StatusCreated, v)
	})
	mux.HandleFunc("DELETE /v1/friends/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := fs.remove(r.PathValue("name"), "removed by the hub operator", wire.ReasonUnfriended)
		if err != nil {
			friendErr(w, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/friends/{name}/rename", func(w http.ResponseWriter, r *http.Request) {
		var req api.RenameFriendRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		v, err := fs.rename(r.PathValue("name"), req.To)
		if err != nil {
			friendErr(w, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
}
