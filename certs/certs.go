// Package certs holds a zone's public-key infrastructure: the zone CA, node
// certificates naming pz://<zone-id>/<device>, zone IDs (the fingerprint
// people compare), certificate requests, and chain verification with an
// expiry grace period.
//
// It is not for storing keys or deciding revocation: callers persist the
// DER/PEM it produces and consult their own revocation records.
package certs

import (
	"crypto/x509"
	"fmt"
)

// HubDevice is the device name the hub's own certificate carries.
const HubDevice = "hub"

// URIScheme is the scheme of node URIs: pz://<zone-id compact>/<device>.
const URIScheme = "pz"

// maxNameLen is the longest zone or device name: the length of a DNS
// label, so a name can always be used as one.
const maxNameLen = 63

// ValidateName checks a zone or device name: 1–63 characters of a–z, 0–9
// and '-', starting with a letter or digit and not ending with '-'. what
// is "zone" or "device" and appears in the error.
func ValidateName(what, name string) error {
	if len(name) == 0 || len(name) > maxNameLen {
		return fmt.Errorf("invalid %s name %q: use 1-%d lower-case letters, digits and '-'", what, name, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("invalid %s name %q: use 1-%d lower-case letters, digits and '-'", what, name, maxNameLen)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("invalid %s name %q: it must not start or end with '-'", what, name)
	}
	return nil
}

// Identity is who a certificate names.
type Identity struct {
	Zone   ZoneID
	Device string
}

// URI is the node URI, pz://<zone compact>/<device>.
func (id Identity) URI() string {
	return URIScheme + "://" + id.Zone.Compact() + "/" + id.Device
}

// String is "device@XXXX-…" for logs.
func (id Identity) String() string {
	return id.Device + "@" + string(id.Zone)
}

// IdentityFromCert reads the single pz:// URI SAN of a node certificate.
// A certificate with none, several, or a malformed one is an error.
//
// Only the canonical form Identity.URI produces is accepted, and the
// certificate may carry no other URI SAN: node certificates are all issued
// by Sign, so anything else is not one of ours.
func IdentityFromCert(c *x509.Certificate) (Identity, error) {
	switch len(c.URIs) {
	case 0:
		return Identity{}, fmt.Errorf("certificate %q names no %s:// URI: not a pzone node certificate", c.Subject.CommonName, URIScheme)
	case 1:
	default:
		return Identity{}, fmt.Errorf("certificate %q has %d URI SANs, want exactly one %s:// URI", c.Subject.CommonName, len(c.URIs), URIScheme)
	}
	u := c.URIs[0]
	bad := func(why string) (Identity, error) {
		return Identity{}, fmt.Errorf("certificate URI %q: %s", u.String(), why)
	}
	switch {
	case u.Scheme != URIScheme:
		return bad("scheme is not " + URIScheme)
	case u.Opaque != "":
		return bad("not of the form " + URIScheme + "://<zone-id>/<device>")
	case u.User != nil:
		return bad("has user info")
	case u.Port() != "":
		return bad("has a port")
	case u.RawQuery != "" || u.ForceQuery:
		return bad("has a query")
	case u.Fragment != "" || u.RawFragment != "":
		return bad("has a fragment")
	}
	zone, err := ParseZoneID(u.Host)
	if err != nil {
		return bad(err.Error())
	}
	if zone.Compact() != u.Host {
		return bad("zone ID is not in compact form")
	}
	if len(u.Path) < 2 || u.Path[0] != '/' {
		return bad("names no device")
	}
	id := Identity{Zone: zone, Device: u.Path[1:]}
	if err := ValidateName("device", id.Device); err != nil {
		return bad(err.Error())
	}
	// Catch-all for encodings the checks above let through (escaped
	// characters in the path, say): only the canonical form names a node.
	if u.String() != id.URI() {
		return bad("not in canonical form " + id.URI())
	}
	return id, nil
}
