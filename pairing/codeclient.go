package pairing

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// ErrCodeMismatch: the hub did not prove it holds the code, so it is not
// the hub that made it, or someone is in the way.
var ErrCodeMismatch = errors.New("the hub did not prove it knows the code")

// ErrDeclined: the person did not confirm the zone.
var ErrDeclined = errors.New("pairing declined")

// ConfirmZone is asked, once the hub has proved it holds the code,
// whether to join its zone; an error stops the pairing before the
// device's key leaves for the hub.
type ConfirmZone func(zone string, id certs.ZoneID) error

// CodeConfirmWait is how long the hub waits for the certificate request
// once the code checked out: the person at the device is reading the zone
// ID and answering.
const CodeConfirmWait = 5 * time.Minute

// PairCode pairs with the hub at addr by the short code c: a CPace
// exchange over the code, inside a TLS connection whose certificate
// nothing vouches for until the exchange does. confirm (nil: yes) is
// asked before the certificate request is sent.
func PairCode(ctx context.Context, c Code, addr string, mode transport.Mode, confirm ConfirmZone) (*Result, error) {
	key, csr, err := newDeviceKey()
	if err != nil {
		return nil, err
	}
	tcfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{transport.ALPNPairCode},
		ServerName:         certs.CodeServerName(c.Number), // a provider routes by the invite number
		InsecureSkipVerify: true,                           // the code authenticates the hub, below; the chain must still be a hub's
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, _, err := certs.VerifyHubChain(raw, time.Now())
			return err
		},
	}
	// The connection idles while the person reads the zone ID: it must
	// outlast the confirmation.
	conn, err := transport.Dial(ctx, addr, mode, transport.Config{TLS: tcfg, IdleTimeout: exchangeTimeout + CodeConfirmWait + time.Minute})
	if err != nil {
		return nil, err
	}
	defer conn.CloseWithError(0, "pairing done")
	// This connection's own chain (with auto, a QUIC and a TCP handshake
	// may both have run), which the callback checked.
	peers := conn.ConnectionState().PeerCertificates
	leaf, ca := peers[0], peers[1]
	id, err := certs.ZoneIDFromKey(ca.PublicKey)
	if err != nil {
		return nil, err
	}

	xctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	st, err := conn.OpenStream(xctx)
	if err != nil {
		return nil, fmt.Errorf("open pairing stream: %w", err)
	}
	defer st.Reset()
	fr := transport.NewFrameReader(st, maxResponseSize)
	step := func(out, in any) error {
		st.SetDeadline(time.Now().Add(exchangeTimeout))
		if err := transport.WriteFrame(st, out); err != nil {
			return fmt.Errorf("send to the hub: %w", err)
		}
		if err := fr.ReadFrame(in); err != nil {
			return fmt.Errorf("read the hub's answer: %w", err)
		}
		return nil
	}

	p, err := NewCodeParams(conn.ConnectionState(), c.Number, leaf.Raw)
	if err != nil {
		return nil, err
	}
	keys, err := runCPace(step, c, p, "the hub")
	if err != nil {
		return nil, err
	}
	var hub CodeHub
	if err := step(&CodeConfirm{MAC: keys.DeviceMAC()}, &hub); err != nil {
		return nil, err
	}
	if hub.Error != nil {
		return nil, hub.Error
	}
	if !CheckMAC(keys.HubMAC(hub.CA, hub.Zone), hub.MAC) {
		return nil, fmt.Errorf("%w: the code does not match, or someone is in the way", ErrCodeMismatch)
	}
	if string(hub.CA) != string(ca.Raw) {
		return nil, fmt.Errorf("%w: it vouched for a zone CA other than the one it presented", ErrCodeMismatch)
	}
	if err := certs.ValidateName("zone", hub.Zone); err != nil {
		return nil, fmt.Errorf("hub sent a bad zone name: %w", err)
	}
	if confirm != nil {
		if err := confirm(hub.Zone, id); err != nil {
			return nil, err
		}
	}
	var resp Response
	if err := step(&CodeCSR{CSR: csr, MAC: keys.CSRMAC(csr)}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	if resp.Zone != hub.Zone {
		return nil, fmt.Errorf("the hub named its zone %q, then %q", hub.Zone, resp.Zone)
	}
	tok := &Token{Addrs: []string{addr}, Zone: id}
	return checkResponse(&resp, tok, key, ca, conn.Kind())
}
