package hub

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/pairing/cpace"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/stores"
	"github.com/pzone/pzone/zone/wire"
)

// The hub's side of the short-code exchanges: pairing a device (ALPN
// pz-pair-code/1) and making friends (pz-friend-code/1, friendcode.go).
// The exchanges are in pairing/codex.go and pairing/friendcode.go
// (docs/PROTOCOL.md "Pairing by code", "Friends by code").

// errNoCodeInvite: no open code invite has the number.
var errNoCodeInvite = errors.New("no open code invite")

// codeKind is what differs between the code exchanges a hub serves:
// devices pairing (pz-pair-code/1) and hubs making friends
// (pz-friend-code/1).
type codeKind struct {
	bucket []byte      // where its invites are
	claims *codeClaims // its numbers with an exchange under way
	who    string      // who comes with a code ("device", "hub")
	remake string      // the command that makes a new code invite
	// params derives the CPace inputs on conn for number.
	params func(conn transport.Conn, number uint32) (pairing.CodeParams, error)
}

// codeExchange is a code exchange whose key confirmation checked out:
// what is left is each kind's own.
type codeExchange struct {
	conn   transport.Conn
	inv    *pairing.Invite
	keys   pairing.CodeKeys
	ip     netip.Addr
	remote string
	read   func(v any, wait time.Duration) error
	send   func(v any) bool
	last   func(v any) // the exchange's last frame
}

// serveCode serves a code exchange of kind k up to its checked key
// confirmation (messages 1 to 3), then hands it to then.
func (h *Hub) serveCode(ctx context.Context, conn transport.Conn, k *codeKind, then func(x *codeExchange)) {
	defer conn.CloseWithError(0, "done")
	// The hub stopping ends the exchange, wherever it waits.
	stop := context.AfterFunc(ctx, func() { conn.CloseWithError(uint64(wire.ReasonShutdown), wire.ReasonShutdown.String()) })
	defer stop()
	actx, cancel := context.WithTimeout(ctx, wire.StreamTimeout)
	st, err := conn.AcceptStream(actx)
	cancel()
	if err != nil {
		return
	}
	defer st.Reset()
	fr := transport.NewFrameReader(st, wire.MaxRequestFrame)
	x := &codeExchange{conn: conn, ip: remoteIP(conn.RemoteAddr()), remote: conn.RemoteAddr().String()}
	x.read = func(v any, wait time.Duration) error {
		st.SetDeadline(time.Now().Add(wait))
		return fr.ReadFrame(v)
	}
	x.send = func(v any) bool {
		st.SetDeadline(time.Now().Add(wire.StreamTimeout))
		return transport.WriteFrame(st, v) == nil
	}
	// The last frame reaches the other side before the connection closes.
	x.last = func(v any) {
		if x.send(v) {
			lingerClose(conn, st)
		}
	}
	refuse := func(code, msg string) *pairing.CodeReply {
		return &pairing.CodeReply{Error: &pairing.Error{Code: code, Message: msg}}
	}
	ip, now := x.ip, h.cfg.Now()

	var start pairing.CodeStart
	if err := x.read(&start, wire.StreamTimeout); err != nil {
		h.limiter.Fail(ip, now)
		x.last(refuse(pairing.CodeBadRequest, "malformed code exchange"))
		return
	}
	if start.Version != pairing.CodeExchangeVersion {
		x.last(refuse(pairing.CodeVersion, fmt.Sprintf("code exchange version %d is not supported by this hub (it speaks %d): use matching pzone versions", start.Version, pairing.CodeExchangeVersion)))
		return
	}
	if ok, wait := h.limiter.Allow(ip, now); !ok {
		x.last(&pairing.CodeReply{Error: rateLimited(ip, wait).Error})
		return
	}
	// One exchange at a time per code, so that every guess is counted
	// before the next is tried: parallel connections would otherwise each
	// test a guess against an invite whose count they all read as low.
	if !k.claims.claim(start.Number) {
		h.limiter.Fail(ip, now)
		x.last(refuse(pairing.CodeBusy, fmt.Sprintf("another %s is using code number %d right now; try again in a moment", k.who, start.Number)))
		return
	}
	release := sync.OnceFunc(func() { k.claims.release(start.Number) })
	defer release()
	inv, err := h.store.codeInvite(k.bucket, start.Number, now)
	if err != nil {
		h.limiter.Fail(ip, now)
		h.log.Info("code exchange refused", "remote", x.remote, "number", start.Number, "err", err)
		msg := fmt.Sprintf("no open invite has the code number %d: check the code, or ask the hub's owner for a new one (%s)", start.Number, k.remake)
		if !errors.Is(err, errNoCodeInvite) {
			msg = "the hub could not look up the code; try again"
		}
		x.last(refuse(pairing.CodeInvalid, msg))
		return
	}
	x.inv = inv
	if ok, wait := h.limiter.AllowInvite(ip, inv.ID, now); !ok {
		x.last(&pairing.CodeReply{Error: rateLimited(ip, wait).Error})
		return
	}
	p, err := k.params(conn, start.Number)
	if err != nil {
		return
	}
	yb, isk, err := cpace.Respond(inv.CodeSecret, p.CI, p.SID, p.ADb, start.Ya, p.ADa)
	if err != nil {
		h.limiter.Fail(ip, now) // not against the invite: a bad share tests no guess
		x.last(refuse(pairing.CodeBadRequest, "malformed code exchange: "+err.Error()))
		return
	}
	if x.keys, err = pairing.NewCodeKeys(isk, p); err != nil || !x.send(&pairing.CodeReply{Yb: yb}) {
		return
	}
	var confirm pairing.CodeConfirm
	if err := x.read(&confirm, wire.StreamTimeout); err != nil {
		return // gone before answering: it learned nothing it can test
	}
	if !pairing.CheckMAC(x.keys.DeviceMAC(), confirm.MAC) {
		x.last(&pairing.CodeHub{Error: h.wrongCode(k, inv, ip, x.remote)})
		return
	}
	release() // the guess is decided; what follows may take a while
	then(x)
}

// deviceCodes is pairing by code.
func (h *Hub) deviceCodes() *codeKind {
	return &codeKind{bucket: bucketInvites, claims: &h.codeBusy, who: "device", remake: "pzh invite --code",
		params: func(conn transport.Conn, n uint32) (pairing.CodeParams, error) {
			return pairing.NewCodeParams(conn.ConnectionState(), n, h.cert.Load().Certificate[0])
		}}
}

func (h *Hub) serveCodePairing(ctx context.Context, conn transport.Conn) {
	h.serveCode(ctx, conn, h.deviceCodes(), func(x *codeExchange) {
		if !x.send(&pairing.CodeHub{CA: h.ca.Cert.Raw, Zone: h.zone.Name, MAC: x.keys.HubMAC(h.ca.Cert.Raw, h.zone.Name)}) {
			return
		}
		var req pairing.CodeCSR
		if err := x.read(&req, pairing.CodeConfirmWait); err != nil {
			h.log.Info("code pairing not completed: the device stopped after the code checked out (declined, or gone)", "remote", x.remote, "invite", x.inv.ID)
			return
		}
		if !pairing.CheckMAC(x.keys.CSRMAC(req.CSR), req.MAC) {
			x.last(&pairing.Response{Error: &pairing.Error{Code: pairing.CodeBadRequest, Message: "the certificate request is not the one the code exchange vouches for"}})
			return
		}
		x.last(h.issue(x.conn, x.inv.ID, req.CSR, x.ip, nil)) // the code exchange was the proof
	})
}

// codeClaims are the code numbers with an exchange in progress.
type codeClaims struct {
	mu   sync.Mutex
	busy map[uint32]bool
}

func (c *codeClaims) claim(n uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[n] {
		return false
	}
	if c.busy == nil {
		c.busy = map[uint32]bool{}
	}
	c.busy[n] = true
	return true
}

func (c *codeClaims) release(n uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.busy, n)
}

// wrongCode counts a wrong code against the invite and the source, burns
// the invite at pairing.MaxWrongCodes, and says so.
func (h *Hub) wrongCode(k *codeKind, inv *pairing.Invite, ip netip.Addr, remote string) *pairing.Error {
	now := h.cfg.Now()
	h.limiter.FailInvite(ip, inv.ID, now)
	n, err := h.store.countWrongCode(k.bucket, inv.ID)
	if err != nil {
		h.log.Error("code exchange: counting a wrong code failed", "invite", inv.ID, "err", err)
		return &pairing.Error{Code: pairing.CodeInternal, Message: "the hub could not check the code; try again"}
	}
	h.changes.Bump()
	if n >= pairing.MaxWrongCodes {
		h.log.Warn("invite burned: too many wrong codes", "invite", inv.ID, "for", k.who, "device", inv.Device, "number", inv.CodeNumber, "wrong", n, "remote", remote)
		return &pairing.Error{Code: pairing.CodeBurned, Message: fmt.Sprintf("wrong code; that was the %d. wrong one, so the invite is burned: ask the hub's owner for a new one (%s)", n, k.remake)}
	}
	h.log.Info("code exchange: wrong code", "invite", inv.ID, "for", k.who, "number", inv.CodeNumber, "wrong", n, "remote", remote)
	return &pairing.Error{Code: pairing.CodeWrong, Message: fmt.Sprintf("wrong code (or someone is in the way): check it and try again; %d more wrong answers burn the invite", pairing.MaxWrongCodes-n)}
}

// AddCodeInvite stores a new code invite under the smallest number no
// listed code invite has, and returns the number.
func (s *hubStore) AddCodeInvite(bucket []byte, inv *pairing.Invite, now time.Time, hold func(uint32) bool) (uint32, error) {
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucket)
		if b.Get([]byte(inv.ID)) != nil {
			return fmt.Errorf("invite id collision; try again")
		}
		taken := map[uint32]bool{}
		err := b.ForEach(func(k, v []byte) error {
			var o pairing.Invite
			// A number stays taken while its invite is listed (until
			// inviteKeep after it ended), so that an old code typed late
			// does not count against a new invite.
			if transport.Unmarshal(v, &o) == nil && o.CodeNumber != 0 {
				taken[o.CodeNumber] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		for n := uint32(1); n <= pairing.MaxCodeNumber; n++ {
			if !taken[n] && (hold == nil || hold(n)) {
				inv.CodeNumber = n
				return stores.PutCBOR(b, []byte(inv.ID), inv)
			}
		}
		return fmt.Errorf("%d code invites are open already: cancel some (pzh invites, pzh invite cancel)", pairing.MaxCodeNumber)
	})
	return inv.CodeNumber, err
}

// codeInvite finds the open code invite numbered n.
func (s *hubStore) codeInvite(bucket []byte, n uint32, now time.Time) (*pairing.Invite, error) {
	var found *pairing.Invite
	err := s.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var o pairing.Invite
			if transport.Unmarshal(v, &o) == nil && o.CodeNumber == n && n != 0 && o.Usable(now) == nil && len(o.CodeSecret) == pairing.CodeSecretSize {
				found = &o
			}
			return nil
		})
	})
	if err == nil && found == nil {
		err = errNoCodeInvite
	}
	return found, err
}

// countWrongCode adds a wrong answer to invite id and returns the count.
func (s *hubStore) countWrongCode(bucket []byte, id string) (int, error) {
	var inv pairing.Invite
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucket)
		if err := stores.GetCBOR(b, []byte(id), &inv); err != nil {
			return err
		}
		inv.WrongCodes++
		if inv.WrongCodes >= pairing.MaxWrongCodes {
			inv.CodeSecret = nil // burned: the words are of no more use
		}
		return stores.PutCBOR(b, []byte(id), &inv)
	})
	return inv.WrongCodes, err
}

// CodeBook keeps short codes' invite numbers apart across the zones of a
// provider, and tells its listener which zone holds a number: a code
// names no zone, so a device or hub with one sends the number as its
// server name (certs.CodeServerName) and the provider routes by it.
type CodeBook interface {
	// Hold records that zone holds number n of the code exchange alpn
	// (transport.ALPNPairCode or ALPNFriendCode) until until, unless
	// another zone holds it: then it reports false.
	Hold(alpn string, n uint32, zone certs.ZoneID, until time.Time) bool
}

// holdCode is AddCodeInvite's check of a number against the provider's
// other zones; nil for a hub of its own. A number is held for as long as
// its invite is listed.
func (h *Hub) holdCode(alpn string, inv *pairing.Invite) func(uint32) bool {
	if h.cfg.Codes == nil {
		return nil
	}
	until := inv.Expires.Add(inviteKeep)
	return func(n uint32) bool { return h.cfg.Codes.Hold(alpn, n, h.zone.ID, until) }
}

// holdListedCodes tells the provider's code book the numbers of the code
// invites this zone lists, when it starts.
func (h *Hub) holdListedCodes() error {
	if h.cfg.Codes == nil {
		return nil
	}
	return h.store.db.View(func(tx kv.Tx) error {
		for _, k := range []struct {
			bucket []byte
			alpn   string
		}{{bucketInvites, transport.ALPNPairCode}, {bucketFriendInvites, transport.ALPNFriendCode}} {
			err := tx.Bucket(k.bucket).ForEach(func(_, v []byte) error {
				var o pairing.Invite
				if transport.Unmarshal(v, &o) == nil && o.CodeNumber != 0 {
					if !h.cfg.Codes.Hold(k.alpn, o.CodeNumber, h.zone.ID, o.Expires.Add(inviteKeep)) {
						h.log.Warn("another zone of the provider holds this code number: the code reaches that zone", "invite", o.ID, "number", o.CodeNumber)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}
