package hub

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/pairing/cpace"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/stores"
	"github.com/pzone/pzone/zone/wire"
)

// The hub's side of pairing by short code (ALPN pz-pair-code/1; the
// exchange is in pairing/codex.go, docs/PROTOCOL.md "Pairing by code").

// errNoCodeInvite: no open code invite has the number.
var errNoCodeInvite = errors.New("no open code invite")

func (h *Hub) serveCodePairing(ctx context.Context, conn transport.Conn) {
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
	read := func(v any, wait time.Duration) error {
		st.SetDeadline(time.Now().Add(wait))
		return fr.ReadFrame(v)
	}
	send := func(v any) bool {
		st.SetDeadline(time.Now().Add(wire.StreamTimeout))
		return transport.WriteFrame(st, v) == nil
	}
	// last sends the exchange's last frame and lets it reach the device
	// before the connection closes.
	last := func(v any) {
		if send(v) {
			lingerClose(conn, st)
		}
	}
	refuse := func(code, msg string) *pairing.Error { return &pairing.Error{Code: code, Message: msg} }
	ip := remoteIP(conn.RemoteAddr())
	remote := conn.RemoteAddr().String()
	now := h.cfg.Now()

	var start pairing.CodeStart
	if err := read(&start, wire.StreamTimeout); err != nil {
		h.limiter.Fail(ip, now)
		last(&pairing.CodeReply{Error: refuse(pairing.CodeBadRequest, "malformed pairing request")})
		return
	}
	if start.Version != pairing.CodeExchangeVersion {
		last(&pairing.CodeReply{Error: refuse(pairing.CodeVersion, fmt.Sprintf("code pairing version %d is not supported by this hub (it speaks %d): use matching pzp and pzh versions", start.Version, pairing.CodeExchangeVersion))})
		return
	}
	if ok, wait := h.limiter.Allow(ip, now); !ok {
		last(&pairing.CodeReply{Error: rateLimited(ip, wait).Error})
		return
	}
	// One exchange at a time per code, so that every guess is counted
	// before the next is tried: parallel connections would otherwise each
	// test a guess against an invite whose count they all read as low.
	if !h.codeBusy.claim(start.Number) {
		h.limiter.Fail(ip, now)
		last(&pairing.CodeReply{Error: refuse(pairing.CodeBusy, fmt.Sprintf("another device is pairing with code number %d right now; try again in a moment", start.Number))})
		return
	}
	release := sync.OnceFunc(func() { h.codeBusy.release(start.Number) })
	defer release()
	inv, err := h.store.codeInvite(start.Number, now)
	if err != nil {
		h.limiter.Fail(ip, now)
		h.log.Info("code pairing refused", "remote", remote, "number", start.Number, "err", err)
		msg := fmt.Sprintf("no open invite has the code number %d: check the code, or ask the hub's owner for a new one (pzh invite --code)", start.Number)
		if !errors.Is(err, errNoCodeInvite) {
			msg = "the hub could not look up the code; try again"
		}
		last(&pairing.CodeReply{Error: refuse(pairing.CodeInvalid, msg)})
		return
	}
	if ok, wait := h.limiter.AllowInvite(ip, inv.ID, now); !ok {
		last(&pairing.CodeReply{Error: rateLimited(ip, wait).Error})
		return
	}
	p, err := pairing.NewCodeParams(conn.ConnectionState(), start.Number, h.cert.Load().Certificate[0])
	if err != nil {
		return
	}
	yb, isk, err := cpace.Respond(inv.CodeSecret, p.CI, p.SID, p.ADb, start.Ya, p.ADa)
	if err != nil {
		h.limiter.Fail(ip, now) // not against the invite: a bad share tests no guess
		last(&pairing.CodeReply{Error: refuse(pairing.CodeBadRequest, "malformed code exchange: "+err.Error())})
		return
	}
	keys, err := pairing.NewCodeKeys(isk, p)
	if err != nil || !send(&pairing.CodeReply{Yb: yb}) {
		return
	}
	var confirm pairing.CodeConfirm
	if err := read(&confirm, wire.StreamTimeout); err != nil {
		return // gone before answering: it learned nothing it can test
	}
	if !pairing.CheckMAC(keys.DeviceMAC(), confirm.MAC) {
		last(&pairing.CodeHub{Error: h.wrongCode(inv, ip, remote)})
		return
	}
	release() // the guess is decided; the person may take a while to confirm
	if !send(&pairing.CodeHub{CA: h.ca.Cert.Raw, Zone: h.zone.Name, MAC: keys.HubMAC(h.ca.Cert.Raw, h.zone.Name)}) {
		return
	}
	var req pairing.CodeCSR
	if err := read(&req, pairing.CodeConfirmWait); err != nil {
		h.log.Info("code pairing not completed: the device stopped after the code checked out (declined, or gone)", "remote", remote, "invite", inv.ID)
		return
	}
	var resp *pairing.Response
	if !pairing.CheckMAC(keys.CSRMAC(req.CSR), req.MAC) {
		resp = &pairing.Response{Error: refuse(pairing.CodeBadRequest, "the certificate request is not the one the code exchange vouches for")}
	} else {
		resp = h.issue(conn, inv.ID, req.CSR, ip, nil) // the code exchange was the proof
	}
	last(resp)
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
func (h *Hub) wrongCode(inv *pairing.Invite, ip netip.Addr, remote string) *pairing.Error {
	now := h.cfg.Now()
	h.limiter.FailInvite(ip, inv.ID, now)
	n, err := h.store.countWrongCode(inv.ID)
	if err != nil {
		h.log.Error("code pairing: counting a wrong code failed", "invite", inv.ID, "err", err)
		return &pairing.Error{Code: pairing.CodeInternal, Message: "the hub could not complete pairing; try again"}
	}
	h.changes.Bump()
	if n >= pairing.MaxWrongCodes {
		h.log.Warn("invite burned: too many wrong codes", "invite", inv.ID, "device", inv.Device, "number", inv.CodeNumber, "wrong", n, "remote", remote)
		return &pairing.Error{Code: pairing.CodeBurned, Message: fmt.Sprintf("wrong code; that was the %d. wrong one, so the invite is burned: ask the hub's owner for a new one (pzh invite --code)", n)}
	}
	h.log.Info("code pairing: wrong code", "invite", inv.ID, "number", inv.CodeNumber, "wrong", n, "remote", remote)
	return &pairing.Error{Code: pairing.CodeWrong, Message: fmt.Sprintf("wrong code (or someone is in the way): check it and try again; %d more wrong answers burn the invite", pairing.MaxWrongCodes-n)}
}

// AddCodeInvite stores a new code invite under the smallest number no
// listed code invite has, and returns the number.
func (s *hubStore) AddCodeInvite(inv *pairing.Invite, now time.Time) (uint32, error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInvites)
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
			if !taken[n] {
				inv.CodeNumber = n
				return stores.PutCBOR(b, []byte(inv.ID), inv)
			}
		}
		return fmt.Errorf("%d code invites are open already: cancel some (pzh invites, pzh invite cancel)", pairing.MaxCodeNumber)
	})
	return inv.CodeNumber, err
}

// codeInvite finds the open code invite numbered n.
func (s *hubStore) codeInvite(n uint32, now time.Time) (*pairing.Invite, error) {
	var found *pairing.Invite
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketInvites).ForEach(func(k, v []byte) error {
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
func (s *hubStore) countWrongCode(id string) (int, error) {
	var inv pairing.Invite
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInvites)
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
