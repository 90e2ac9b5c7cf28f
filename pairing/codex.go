package pairing

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"fmt"

	"github.com/pzone/pzone/pairing/cpace"
)

// The exchange of pairing by code (ALPN pz-pair-code/1), on one stream the
// device opens, one CBOR frame each way at a time (docs/PROTOCOL.md,
// "Pairing by code"):
//
//	device → hub  CodeStart   {version, number, Ya}
//	hub → device  CodeReply   {Yb}                     (or an error)
//	device → hub  CodeConfirm {MAC_device}
//	hub → device  CodeHub     {CA, zone, MAC_hub}      (or an error: a wrong code)
//	device → hub  CodeCSR     {CSR, MAC_csr}            (after the person confirms the zone)
//	hub → device  Response    (as pz-pair/1)
//
// The hub says nothing that depends on the code before the device has
// proved it holds it, and the device sends its key only to a hub that has
// proved it holds it too.

// CodeExchangeVersion is the version of the code exchange.
const CodeExchangeVersion = 1

// CodeExporterLabel is the TLS exporter label (RFC 8446 §7.5) of the
// exchange's session ID: both ends of one TLS connection, and only they,
// derive the same value, so a relay that terminates TLS on each side
// (a man in the middle) runs two exchanges with different session IDs,
// and their keys differ.
const CodeExporterLabel = "EXPORTER-pzone-pair-code-v1"

// Code exchange messages.
type (
	CodeStart struct {
		Version uint   `cbor:"1,keyasint"`
		Number  uint32 `cbor:"2,keyasint"`
		Ya      []byte `cbor:"3,keyasint"`
	}
	CodeReply struct {
		Error *Error `cbor:"1,keyasint,omitempty"`
		Yb    []byte `cbor:"2,keyasint,omitempty"`
	}
	CodeConfirm struct {
		MAC []byte `cbor:"1,keyasint"`
	}
	CodeHub struct {
		Error *Error `cbor:"1,keyasint,omitempty"`
		CA    []byte `cbor:"2,keyasint,omitempty"` // zone CA certificate, DER
		Zone  string `cbor:"3,keyasint,omitempty"` // the zone's name
		MAC   []byte `cbor:"4,keyasint,omitempty"`
	}
	CodeCSR struct {
		CSR []byte `cbor:"1,keyasint"`
		MAC []byte `cbor:"2,keyasint"`
	}
)

// Refusals particular to codes.
const (
	CodeWrong  = "wrong-code" // the key confirmation failed
	CodeBurned = "burned"     // the invite took MaxWrongCodes wrong codes
	CodeBusy   = "busy"       // another exchange for the code is under way
)

// CodeParams are the CPace inputs of one exchange: CI names the protocol
// and the invite number, sid is the TLS exporter, ADa names the device's
// role and ADb the hub's TLS certificate (the identity it presented).
type CodeParams struct {
	CI, SID, ADa, ADb []byte
}

// NewCodeParams derives the CPace inputs for invite number on the TLS
// connection cs whose server certificate (the hub's leaf) is hubLeaf.
func NewCodeParams(cs tls.ConnectionState, number uint32, hubLeaf []byte) (CodeParams, error) {
	sid, err := cs.ExportKeyingMaterial(CodeExporterLabel, nil, 32)
	if err != nil {
		return CodeParams{}, fmt.Errorf("derive the code exchange's session ID: %w", err)
	}
	ci := binary.BigEndian.AppendUint32([]byte("pzone pairing code v1 invite "), number)
	return CodeParams{CI: ci, SID: sid, ADa: []byte("pzone device"), ADb: hubAD(hubLeaf)}, nil
}

// CodeKeys are the keys derived from the CPace ISK, one per purpose.
type CodeKeys struct {
	sid              []byte
	device, hub, csr []byte
}

// NewCodeKeys derives the keys of an exchange from its ISK with HKDF-SHA256
// (the ISK as the input key, the session ID as salt, one label each).
func NewCodeKeys(isk []byte, p CodeParams) (CodeKeys, error) {
	prk, err := hkdf.Extract(sha256.New, isk, p.SID)
	if err != nil {
		return CodeKeys{}, err
	}
	k := CodeKeys{sid: p.SID}
	for _, x := range []struct {
		dst   *[]byte
		label string
	}{{&k.device, "pzone code: device confirm"}, {&k.hub, "pzone code: hub confirm"}, {&k.csr, "pzone code: csr"}} {
		if *x.dst, err = hkdf.Expand(sha256.New, prk, x.label, 32); err != nil {
			return CodeKeys{}, err
		}
	}
	return k, nil
}

func mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(binary.AppendUvarint(nil, uint64(len(p))))
		m.Write(p)
	}
	return m.Sum(nil)
}

// DeviceMAC is the device's key confirmation.
func (k CodeKeys) DeviceMAC() []byte { return mac(k.device, k.sid) }

// HubMAC is the hub's key confirmation, over what it sends: the zone CA
// and the zone's name.
func (k CodeKeys) HubMAC(ca []byte, zone string) []byte { return mac(k.hub, k.sid, ca, []byte(zone)) }

// CSRMAC authenticates the device's certificate request.
func (k CodeKeys) CSRMAC(csr []byte) []byte { return mac(k.csr, k.sid, csr) }

// CheckMAC compares in constant time.
func CheckMAC(want, got []byte) bool { return hmac.Equal(want, got) }

// runCPace runs the initiator's half of the code exchange's first two
// messages with step (send one frame, read the answer) and derives the
// keys; who names the other side in errors.
func runCPace(step func(out, in any) error, c Code, p CodeParams, who string) (CodeKeys, error) {
	ini, ya, err := cpace.Start(c.Secret[:], p.CI, p.SID, p.ADa)
	if err != nil {
		return CodeKeys{}, err
	}
	var reply CodeReply
	if err := step(&CodeStart{Version: CodeExchangeVersion, Number: c.Number, Ya: ya}, &reply); err != nil {
		return CodeKeys{}, err
	}
	if reply.Error != nil {
		return CodeKeys{}, reply.Error
	}
	isk, err := ini.Finish(reply.Yb, p.ADb)
	if err != nil {
		return CodeKeys{}, fmt.Errorf("%s's answer: %w", who, err)
	}
	return NewCodeKeys(isk, p)
}
