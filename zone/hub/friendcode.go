package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// Making friends by a short code (ALPN pz-friend-code/1): the code
// exchange of pairing (hubcode.go) between two hubs, with each hub's
// chain leaf in the CPace transcript and what each says of its zone
// authenticated by the CPace key (pairing/friendcode.go).

// friendCodes is the inviting side's kind of code exchange.
func (fs *friends) friendCodes() *codeKind {
	return &codeKind{bucket: bucketFriendInvites, claims: &fs.h.friendCodeBusy, who: "hub", remake: "pzh friend invite --code",
		params: func(conn transport.Conn, n uint32) (pairing.CodeParams, error) {
			cs := conn.ConnectionState()
			if len(cs.PeerCertificates) < 2 {
				return pairing.CodeParams{}, errors.New("no hub chain")
			}
			return pairing.NewFriendCodeParams(cs, n, cs.PeerCertificates[0].Raw, fs.h.cert.Load().Certificate[0])
		}}
}

// serveCodeInvite is the inviting side of pz-friend-code/1.
func (fs *friends) serveCodeInvite(ctx context.Context, conn transport.Conn) {
	h := fs.h
	h.serveCode(ctx, conn, fs.friendCodes(), func(x *codeExchange) {
		addrs := h.publicAddrs()
		if !x.send(&pairing.FriendCodeHub{CA: h.ca.Cert.Raw, Zone: h.zone.Name, HubAddrs: addrs, MAC: x.keys.InviterMAC(h.ca.Cert.Raw, h.zone.Name, addrs)}) {
			return
		}
		var join pairing.FriendCodeJoin
		if err := x.read(&join, wire.StreamTimeout); err != nil {
			return
		}
		// The redeeming zone's CA is the one its TLS chain presented.
		ca := x.conn.ConnectionState().PeerCertificates[1]
		if !pairing.CheckMAC(x.keys.JoinMAC(ca.Raw, join.Zone, join.HubAddrs), join.MAC) {
			x.last(&pairing.FriendResponse{Error: &pairing.Error{Code: pairing.CodeBadRequest, Message: "the friend request is not the one the code exchange vouches for"}})
			return
		}
		req := &pairing.FriendRequest{Version: pairing.FriendProtocolVersion, InviteID: x.inv.ID, Zone: join.Zone, HubAddrs: join.HubAddrs}
		x.last(fs.redeem(x.conn, req, x.ip, nil)) // the code exchange was the proof
	})
}

// acceptCode redeems another hub's friend code at its address.
func (fs *friends) acceptCode(ctx context.Context, req api.FriendAcceptRequest) (*api.FriendView, error) {
	code, err := pairing.ParseCode(req.Code)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadFriend, err)
	}
	if req.Addr == "" || req.Token != "" {
		return nil, fmt.Errorf("%w: give the code with the friend's hub address (HOST:PORT), and no token", errBadFriend)
	}
	if err := certs.ValidateName("zone", req.As); err != nil {
		return nil, fmt.Errorf("%w: petname: %w", errBadFriend, err)
	}
	conf := &tls.Config{
		MinVersion:           tls.VersionTLS13,
		NextProtos:           []string{transport.ALPNFriendCode},
		ServerName:           certs.CodeServerName(code.Number),
		InsecureSkipVerify:   true, // the code authenticates the other hub; its chain must still be a hub's
		GetClientCertificate: fs.h.hubClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, _, err := certs.VerifyHubChain(raw, time.Now())
			return err
		},
	}
	conn, err := transport.Dial(ctx, req.Addr, transport.ModeAuto, transport.Config{TLS: conf, Logger: fs.h.log})
	if err != nil {
		return nil, fmt.Errorf("the friend's hub at %s did not answer (is its pzh serve running, and its port open for UDP or TCP?): %w", req.Addr, err)
	}
	defer conn.CloseWithError(0, "done")
	peers := conn.ConnectionState().PeerCertificates
	ca := peers[1]
	zone, err := certs.ZoneIDFromKey(ca.PublicKey)
	if err != nil {
		return nil, err
	}
	if zone == fs.h.zone.ID {
		return nil, fmt.Errorf("%w: %s is this zone's own hub: give the code to the other hub's owner", errBadFriend, req.Addr)
	}
	if f := fs.get(zone.Compact()); f != nil {
		return nil, fmt.Errorf("%w: zone %s is a friend already, as %q", ErrAlreadyDone, zone, f.Petname)
	}
	if err := fs.checkPetname(req.As, zone); err != nil {
		return nil, err
	}
	self := fs.h.cert.Load()
	got, err := pairing.FriendByCode(ctx, conn, code, pairing.FriendSelf{Leaf: self.Certificate[0], CA: fs.h.ca.Cert.Raw, Zone: fs.h.zone.Name, HubAddrs: fs.h.publicAddrs()})
	if err != nil {
		return nil, err
	}
	addrs := got.HubAddrs
	if len(addrs) == 0 || len(addrs) > maxFriendAddrs || slices.ContainsFunc(addrs, func(a string) bool { return a == "" || len(a) > maxFriendAddrLen }) {
		addrs = []string{req.Addr}
	}
	return fs.record(&FriendRecord{Petname: req.As, Zone: got.Zone, ZoneID: zone, CA: ca.Raw, HubAddrs: addrs, Added: fs.h.cfg.Now().UTC(), ca: ca})
}
