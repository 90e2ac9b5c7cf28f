package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pzone/pzone/zone/stores"
	"github.com/pzone/pzone/zone/wire"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
)

// The hub's side of pairing: a device redeeming an invite on a connection
// that presents no certificate (docs/PROTOCOL.md, "Pairing").

// errZoneFull: the zone has as many devices as Config.MaxDevices.
var errZoneFull = errors.New("zone full")

func (h *Hub) servePairing(ctx context.Context, conn transport.Conn) {
	serveOneShot(ctx, conn, func(st transport.Stream) any {
		ip := remoteIP(conn.RemoteAddr())
		var req pairing.Request
		if err := transport.NewFrameReader(st, wire.MaxRequestFrame).ReadFrame(&req); err != nil {
			if ok, wait := h.limiter.Allow(ip, h.cfg.Now()); !ok {
				return rateLimited(ip, wait)
			}
			h.limiter.Fail(ip, h.cfg.Now())
			h.log.Info("pairing request unreadable", "remote", conn.RemoteAddr().String(), "err", err)
			return &pairing.Response{Error: &pairing.Error{Code: pairing.CodeBadRequest, Message: "malformed pairing request"}}
		}
		cs := conn.ConnectionState()
		if wait, limited := h.overLimit(ip, req.InviteID, bucketInvites, func(id string, verifier []byte) bool {
			return pairing.CheckProof(cs, id, verifier, req.Proof)
		}); limited {
			return rateLimited(ip, wait)
		}
		return h.redeem(conn, &req, ip)
	})
}

// overLimit decides a request for invite (its id as sent) from ip: if the
// source or the invite is over its limit of failures, only a valid proof
// (checked with proofOK against the stored verifier, without writing)
// goes on; the rest are told to wait, and each counts as a failure. A
// request under the limit goes on to be checked in full.
func (h *Hub) overLimit(ip netip.Addr, invite string, bucket []byte, proofOK func(id string, verifier []byte) bool) (time.Duration, bool) {
	now := h.cfg.Now()
	id, err := pairing.NormalizeInviteID(invite)
	if err != nil {
		id = ""
	}
	ok, wait := h.limiter.AllowInvite(ip, id, now)
	if ok {
		return 0, false
	}
	if id != "" {
		if v, err := h.store.inviteVerifier(bucket, id); err == nil && proofOK(id, v) {
			h.log.Info("pairing over the rate limit let through: its proof holds", "remote", ip, "invite", id)
			return 0, false
		}
	}
	h.limiter.FailInvite(ip, id, now)
	h.log.Debug("pairing rate-limited", "remote", ip, "invite", id, "retry_in", wait)
	return wait, true
}

var errBadProof = errors.New("bad proof")

// inviteRefusal is the answer to a redemption (of a device or friend
// invite, named what) that failed on the invite itself, and whether err
// is such a failure. Nothing about an invite is said before its proof
// checks out: unknown and wrong proof are both "invalid".
func inviteRefusal(err error, what, ask string) (code, msg string, ok bool) {
	switch {
	case errors.Is(err, stores.ErrNotFound), errors.Is(err, errBadProof):
		return pairing.CodeInvalid, what + " not recognised: the token is wrong or for another hub", true
	case errors.Is(err, pairing.ErrInviteExpired):
		return pairing.CodeExpired, "this " + what + " has expired; " + ask, true
	case errors.Is(err, pairing.ErrInviteUsedUp):
		return pairing.CodeUsed, "this " + what + " has already been used; " + ask, true
	case errors.Is(err, pairing.ErrInviteCancelled):
		return pairing.CodeCancelled, "this " + what + " was cancelled; " + ask, true
	case errors.Is(err, pairing.ErrInviteBurned):
		return pairing.CodeBurned, "this " + what + " was burned by wrong codes; " + ask, true
	}
	return "", "", false
}

func rateLimited(ip netip.Addr, wait time.Duration) *pairing.Response {
	secs := uint32(wait/time.Second) + 1
	return &pairing.Response{Error: &pairing.Error{Code: pairing.CodeRateLimited, RetryAfter: secs,
		Message: fmt.Sprintf("too many failed pairing attempts from %s; try again in %d s", ip, secs)}}
}

func (h *Hub) redeem(conn transport.Conn, req *pairing.Request, ip netip.Addr) *pairing.Response {
	id, idErr := pairing.NormalizeInviteID(req.InviteID)
	if req.Version != pairing.ProtocolVersion {
		return h.refusePairing(conn, ip, id, pairing.CodeVersion, fmt.Sprintf("pairing protocol version %d is not supported by this hub (it speaks %d): use matching pzp and pzh versions", req.Version, pairing.ProtocolVersion))
	}
	if idErr != nil {
		return h.refusePairing(conn, ip, "", pairing.CodeInvalid, "invite not recognised: the token is wrong or for another hub")
	}
	cs := conn.ConnectionState()
	return h.issue(conn, id, req.CSR, ip, func(inv *pairing.Invite) error {
		if !pairing.CheckProof(cs, id, inv.Verifier, req.Proof) {
			return errBadProof
		}
		return nil
	})
}

// refusePairing counts a refusal against the source and answers it.
func (h *Hub) refusePairing(conn transport.Conn, ip netip.Addr, id, code, msg string) *pairing.Response {
	h.limiter.Fail(ip, h.cfg.Now())
	h.log.Info("pairing refused", "remote", conn.RemoteAddr().String(), "invite", id, "code", code) // id is "" unless well-formed
	return &pairing.Response{Error: &pairing.Error{Code: code, Message: msg}}
}

// issue redeems invite id for the certificate request csr, once check
// (the proof of the secret, inside the redemption; nil when the caller
// had the proof already) accepts the invite:
// the one path of pairing by token and by code from the request on.
func (h *Hub) issue(conn transport.Conn, id string, csr []byte, ip netip.Addr, check func(*pairing.Invite) error) *pairing.Response {
	now := h.cfg.Now()
	remote := conn.RemoteAddr().String()
	pub, err := certs.ParseCSR(csr)
	if err != nil {
		return h.refusePairing(conn, ip, id, pairing.CodeBadRequest, "bad certificate request: "+err.Error())
	}
	most := h.cfg.MaxDevices
	if most > 0 {
		// Held until the device is registered, so that two pairings at
		// once cannot both take the last place.
		h.pairMu.Lock()
		defer h.pairMu.Unlock()
	}
	rec, cert, err := h.store.Redeem(id, now, func(inv *pairing.Invite, device string) (*x509.Certificate, error) {
		if check != nil {
			if err := check(inv); err != nil {
				return nil, err
			}
		}
		if err := inv.Usable(now); err != nil {
			return nil, err
		}
		// Only who holds a good invite learns that the zone is full.
		if paired, _ := h.reg.counts(); most > 0 && paired >= most {
			return nil, fmt.Errorf("%w: it has %d devices", errZoneFull, paired)
		}
		return h.ca.Sign(pub, device, now, inv.CertLifetime)
	})
	if errors.Is(err, errZoneFull) {
		h.log.Info("pairing refused: zone full", "remote", remote, "invite", id, "limit", most)
		return &pairing.Response{Error: &pairing.Error{Code: pairing.CodeZoneFull, Message: fmt.Sprintf(
			"zone %q has %d devices, as many as its provider allows: remove one (pzh revoke DEVICE) or ask the provider for a higher limit; the invite was not used", h.zone.Name, most)}}
	}
	if code, msg, ok := inviteRefusal(err, "invite", "ask the hub's owner for a new one (pzh invite)"); ok {
		if errors.Is(err, errBadProof) {
			// A wrong proof counts against the invite too (from any source).
			h.limiter.FailInvite(ip, id, now)
			h.log.Info("pairing refused", "remote", remote, "invite", id, "code", code)
			return &pairing.Response{Error: &pairing.Error{Code: code, Message: msg}}
		}
		return h.refusePairing(conn, ip, id, code, msg)
	}
	if err != nil {
		h.log.Error("pairing failed", "remote", remote, "err", err)
		msg := "the hub could not complete pairing; try again"
		if stores.IsDiskFull(err) {
			msg = "the hub's disk is full, so it could not record this device: ask its owner to free space there, then pair again (the invite was not used)"
		}
		return &pairing.Response{Error: &pairing.Error{Code: pairing.CodeInternal, Message: msg}}
	}
	h.publishMu.Lock()
	h.reg.add(rec)
	h.putCert(wire.CertKeyDevice+rec.Name, cert.Raw)
	h.publishMu.Unlock()
	h.changes.Bump()
	h.log.Info("device paired", "device", rec.Name, "remote", remote, "via", conn.Kind(), "invite", id, "cert_expires", cert.NotAfter)
	return &pairing.Response{Device: rec.Name, Zone: h.zone.Name, Cert: cert.Raw, CA: h.ca.Cert.Raw, HubAddrs: h.publicAddrs()}
}
