package pairing

// The pairing exchange (ALPN pz-pair/1): the device opens one stream,
// writes one Request frame, reads one Response frame. See docs/PROTOCOL.md.

// Request redeems an invite.
type Request struct {
	Version  uint   `cbor:"1,keyasint"` // ProtocolVersion
	InviteID string `cbor:"2,keyasint"`
	Proof    []byte `cbor:"3,keyasint"` // see Proof
	CSR      []byte `cbor:"4,keyasint"` // DER PKCS#10, Ed25519
}

// Response is the hub's answer: Error set, or everything else set.
type Response struct {
	Error    *Error   `cbor:"1,keyasint,omitempty"`
	Device   string   `cbor:"2,keyasint,omitempty"` // the name the hub gave this device
	Zone     string   `cbor:"3,keyasint,omitempty"` // the zone's name
	Cert     []byte   `cbor:"4,keyasint,omitempty"` // device certificate, DER
	CA       []byte   `cbor:"5,keyasint,omitempty"` // zone CA certificate, DER
	HubAddrs []string `cbor:"6,keyasint,omitempty"`
}

// ProtocolVersion is the version of Request/Response.
const ProtocolVersion = 1

// Error codes of a refused pairing. Nothing about a particular invite is
// said before the proof checks out: an unknown invite and a wrong proof
// both get CodeInvalid, so only a holder of the token learns the invite's
// state (expired, used, cancelled). The codes that come earlier
// (rate-limited, version, bad-request) concern the request, not the invite.
const (
	CodeInvalid     = "invalid"      // unknown invite or wrong proof
	CodeExpired     = "expired"      // invite past its expiry
	CodeUsed        = "used"         // no uses left
	CodeCancelled   = "cancelled"    // cancelled by the hub operator
	CodeRateLimited = "rate-limited" // too many failures from this address
	CodeBadRequest  = "bad-request"  // malformed request or CSR
	CodeVersion     = "version"      // unsupported protocol version
	CodeInternal    = "internal"     // the hub failed; try again
	CodeZoneFull    = "zone-full"    // the zone has as many devices as its provider allows
)

// Error is a refused pairing.
type Error struct {
	Code       string `cbor:"1,keyasint"`
	Message    string `cbor:"2,keyasint"`
	RetryAfter uint32 `cbor:"3,keyasint,omitempty"` // seconds, with CodeRateLimited
}

func (e *Error) Error() string { return e.Message }
