package pairing

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// Making friends by a short code (ALPN pz-friend-code/1): the exchange
// of pairing by code between two hubs, the redeeming hub in the device's
// place. Both present their chains in the TLS handshake, and each chain's
// leaf is in the CPace transcript; after the key confirmation each side
// authenticates what it adds with the CPace key (docs/PROTOCOL.md,
// "Friends by code"):
//
//	redeemer → inviter  CodeStart       {version, number, Ya}
//	inviter → redeemer  CodeReply       {Yb}               (or an error)
//	redeemer → inviter  CodeConfirm     {MAC_redeemer}
//	inviter → redeemer  FriendCodeHub   {CA, zone, addresses, MAC}   (or an error)
//	redeemer → inviter  FriendCodeJoin  {zone, addresses, MAC}
//	inviter → redeemer  FriendResponse  (as pz-friend/1)

// FriendCodeExporterLabel is the TLS exporter label of the exchange's
// session ID.
const FriendCodeExporterLabel = "EXPORTER-pzone-friend-code-v1"

// Friend code messages.
type (
	FriendCodeHub struct {
		Error    *Error   `cbor:"1,keyasint,omitempty"`
		CA       []byte   `cbor:"2,keyasint,omitempty"` // the inviting zone's CA certificate, DER
		Zone     string   `cbor:"3,keyasint,omitempty"`
		HubAddrs []string `cbor:"4,keyasint,omitempty"`
		MAC      []byte   `cbor:"5,keyasint,omitempty"`
	}
	FriendCodeJoin struct {
		Zone     string   `cbor:"1,keyasint"`
		HubAddrs []string `cbor:"2,keyasint"`
		MAC      []byte   `cbor:"3,keyasint"`
	}
)

func hubAD(leaf []byte) []byte {
	h := sha256.Sum256(leaf)
	return append([]byte("pzone hub "), h[:]...)
}

// NewFriendCodeParams derives the CPace inputs for friend invite number
// on the TLS connection cs, whose client presented redeemerLeaf and
// server inviterLeaf.
func NewFriendCodeParams(cs tls.ConnectionState, number uint32, redeemerLeaf, inviterLeaf []byte) (CodeParams, error) {
	sid, err := cs.ExportKeyingMaterial(FriendCodeExporterLabel, nil, 32)
	if err != nil {
		return CodeParams{}, fmt.Errorf("derive the code exchange's session ID: %w", err)
	}
	ci := binary.BigEndian.AppendUint32([]byte("pzone friend code v1 invite "), number)
	return CodeParams{CI: ci, SID: sid, ADa: hubAD(redeemerLeaf), ADb: hubAD(inviterLeaf)}, nil
}

func macParts(sid, ca []byte, zone string, addrs []string) [][]byte {
	parts := [][]byte{sid, ca, []byte(zone)}
	for _, a := range addrs {
		parts = append(parts, []byte(a))
	}
	return parts
}

// InviterMAC authenticates the inviting hub's zone: its CA, name and
// addresses.
func (k CodeKeys) InviterMAC(ca []byte, zone string, addrs []string) []byte {
	return mac(k.hub, macParts(k.sid, ca, zone, addrs)...)
}

// JoinMAC authenticates the redeeming hub's zone: its CA (from its TLS
// chain), name and addresses.
func (k CodeKeys) JoinMAC(ca []byte, zone string, addrs []string) []byte {
	return mac(k.csr, macParts(k.sid, ca, zone, addrs)...)
}

// FriendSelf is the redeeming hub as it tells the other: its chain's
// leaf and CA (as presented in the handshake), name and addresses.
type FriendSelf struct {
	Leaf, CA []byte
	Zone     string
	HubAddrs []string
}

// FriendByCode runs the redeeming side of pz-friend-code/1 on conn,
// whose handshake presented self's chain and got a well-formed hub chain
// back, and returns what the inviting hub said of its zone, once both
// sides hold it proved.
func FriendByCode(ctx context.Context, conn transport.Conn, c Code, self FriendSelf) (*FriendCodeHub, error) {
	peers := conn.ConnectionState().PeerCertificates
	if len(peers) < 2 {
		return nil, fmt.Errorf("the friend's hub presented no hub chain")
	}
	leaf, ca := peers[0], peers[1]
	xctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	st, err := conn.OpenStream(xctx)
	if err != nil {
		return nil, fmt.Errorf("open friend stream: %w", err)
	}
	defer st.Reset()
	fr := transport.NewFrameReader(st, maxResponseSize)
	step := func(out, in any) error {
		st.SetDeadline(time.Now().Add(exchangeTimeout))
		if err := transport.WriteFrame(st, out); err != nil {
			return fmt.Errorf("send to the friend's hub: %w", err)
		}
		if err := fr.ReadFrame(in); err != nil {
			return fmt.Errorf("read the friend's hub's answer: %w", err)
		}
		return nil
	}
	p, err := NewFriendCodeParams(conn.ConnectionState(), c.Number, self.Leaf, leaf.Raw)
	if err != nil {
		return nil, err
	}
	keys, err := runCPace(step, c, p, "the friend's hub")
	if err != nil {
		return nil, err
	}
	var hub FriendCodeHub
	if err := step(&CodeConfirm{MAC: keys.DeviceMAC()}, &hub); err != nil {
		return nil, err
	}
	if hub.Error != nil {
		return nil, hub.Error
	}
	if !CheckMAC(keys.InviterMAC(hub.CA, hub.Zone, hub.HubAddrs), hub.MAC) {
		return nil, fmt.Errorf("%w: the code does not match, or someone is in the way", ErrCodeMismatch)
	}
	if string(hub.CA) != string(ca.Raw) {
		return nil, fmt.Errorf("%w: it vouched for a zone CA other than the one it presented", ErrCodeMismatch)
	}
	if err := certs.ValidateName("zone", hub.Zone); err != nil {
		return nil, fmt.Errorf("the friend's hub sent a bad zone name: %w", err)
	}
	var resp FriendResponse
	join := &FriendCodeJoin{Zone: self.Zone, HubAddrs: self.HubAddrs, MAC: keys.JoinMAC(self.CA, self.Zone, self.HubAddrs)}
	if err := step(join, &resp); err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	if resp.Zone != hub.Zone {
		return nil, fmt.Errorf("the friend's hub named its zone %q, then %q", hub.Zone, resp.Zone)
	}
	return &hub, nil
}
