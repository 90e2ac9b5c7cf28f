package pairing

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// Result is what a device holds after pairing. Nothing is written by
// Pair: the caller persists it, all at once.
type Result struct {
	Device   string
	Zone     string
	ZoneID   certs.ZoneID
	Key      ed25519.PrivateKey
	Cert     *x509.Certificate
	CA       *x509.Certificate
	HubAddrs []string
	Via      transport.Kind // the transport the exchange used
}

// ErrZoneMismatch: the hub presented a zone other than the token's.
var ErrZoneMismatch = errors.New("hub is not the zone the invite names")

// exchangeTimeout bounds the request/response after the handshake: the
// hub does one signature and one store commit.
const exchangeTimeout = 15 * time.Second

// Pair redeems tok: it generates the device key, connects to the hub's
// addresses in turn with the pairing ALPN, pins the hub to tok.Zone, proves
// the secret over this connection, and returns the issued credentials.
func Pair(ctx context.Context, tok *Token, mode transport.Mode) (*Result, error) {
	key, csr, err := newDeviceKey()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, addr := range tok.Addrs {
		res, err := pairAt(ctx, addr, tok, key, csr, mode)
		if err == nil {
			return res, nil
		}
		var perr *Error
		if errors.As(err, &perr) || errors.Is(err, ErrZoneMismatch) || ctx.Err() != nil {
			return nil, err // the hub answered, or we were stopped: other addresses would say the same
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return nil, fmt.Errorf("no hub address answered: %w", errors.Join(errs...))
}

// newDeviceKey makes the device's key, which never leaves it, and the
// certificate request the hub signs.
func newDeviceKey() (ed25519.PrivateKey, []byte, error) {
	key, err := certs.NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := certs.NewCSR(key)
	return key, csr, err
}

// PinnedHubTLS returns a client TLS config for alpn that accepts only a
// hub certificate chain whose CA has the zone ID zone, and reports that CA
// through got. The chain the hub sends is [hub leaf, zone CA].
func PinnedHubTLS(zone certs.ZoneID, alpn string, got *x509.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		ServerName:         certs.ServerName(zone), // routes to the zone on a provider's shared listener
		InsecureSkipVerify: true,                   // replaced by VerifyPeerCertificate: trust is the pinned zone ID, not a web PKI name
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			ca, id, err := certs.VerifyHubChain(raw, time.Now())
			if err != nil {
				return err
			}
			if id != zone {
				return fmt.Errorf("%w: expected zone %s, the hub presented %s; the token is for another hub, or someone is in the way", ErrZoneMismatch, zone, id)
			}
			if got != nil {
				*got = *ca
			}
			return nil
		},
	}
}

func pairAt(ctx context.Context, addr string, tok *Token, key ed25519.PrivateKey, csr []byte, mode transport.Mode) (*Result, error) {
	conn, err := transport.Dial(ctx, addr, mode, transport.Config{TLS: PinnedHubTLS(tok.Zone, transport.ALPNPairing, nil)})
	if err != nil {
		return nil, err
	}
	defer conn.CloseWithError(0, "pairing done")
	// The CA the pinning check accepted, from this connection's own
	// handshake: with auto, a QUIC and a TCP handshake may both have run.
	ca := conn.ConnectionState().PeerCertificates[1]

	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("open pairing stream: %w", err)
	}
	defer st.Reset()
	deadline, _ := ctx.Deadline()
	st.SetDeadline(deadline)

	v := Verifier(tok.Secret)
	proof, err := Proof(conn.ConnectionState(), tok.InviteID, v[:])
	if err != nil {
		return nil, err
	}
	if err := transport.WriteFrame(st, &Request{Version: ProtocolVersion, InviteID: tok.InviteID, Proof: proof, CSR: csr}); err != nil {
		return nil, fmt.Errorf("send pairing request: %w", err)
	}
	var resp Response
	if err := transport.NewFrameReader(st, maxResponseSize).ReadFrame(&resp); err != nil {
		return nil, fmt.Errorf("read pairing response: %w", err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return checkResponse(&resp, tok, key, ca, conn.Kind())
}

// maxResponseSize: two certificates of a few hundred bytes and a few
// addresses; 64 KiB is generous.
const maxResponseSize = 64 << 10

func checkResponse(resp *Response, tok *Token, key ed25519.PrivateKey, ca *x509.Certificate, via transport.Kind) (*Result, error) {
	if !bytes.Equal(resp.CA, ca.Raw) {
		return nil, fmt.Errorf("hub returned a CA certificate other than the one it presented")
	}
	// Checked at this device's time, unless that is before the
	// certificate begins: then this clock is behind the hub's, and only
	// the hub (and other devices, on their clocks) ever check this
	// certificate, so it is checked as of its start. A clock behind still
	// spoils what it stamps, which the device says when it runs.
	at := time.Now()
	if c, err := x509.ParseCertificate(resp.Cert); err == nil && at.Before(c.NotBefore) && at.Before(c.NotAfter) {
		at = c.NotBefore
	}
	v, err := certs.Verify(ca, [][]byte{resp.Cert}, at, 0)
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	if v.Identity.Zone != tok.Zone || v.Identity.Device != resp.Device {
		return nil, fmt.Errorf("issued certificate names %s, not device %q of zone %s", v.Identity, resp.Device, tok.Zone)
	}
	pub, ok := v.Cert.PublicKey.(ed25519.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("issued certificate is not for this device's key")
	}
	if err := certs.ValidateName("zone", resp.Zone); err != nil {
		return nil, fmt.Errorf("hub sent a bad zone name: %w", err)
	}
	addrs := resp.HubAddrs
	if len(addrs) == 0 {
		addrs = tok.Addrs
	}
	return &Result{Device: resp.Device, Zone: resp.Zone, ZoneID: tok.Zone, Key: key, Cert: v.Cert, CA: ca, HubAddrs: addrs, Via: via}, nil
}
