package wire

import (
	"github.com/pzone/pzone/certs"
)

// Keys of the certificates bucket (docs/PROTOCOL.md, "Synchronisation").
const (
	CertKeyCA            = "ca"       // the zone CA certificate, DER
	CertKeyHub           = "hub"      // the hub's current certificate, DER
	CertKeyDevice        = "device/"  // + device name: its current certificate, DER
	CertKeyRevokedPrefix = "revoked/" // + certificate serial (hex): a Revocation (CBOR); every node refuses that certificate
)

// UserKeyZone is the user bucket's record of the zone (a ZoneRecord).
const UserKeyZone = "zone"

// ZoneRecord is the value of the user bucket's "zone" record: who this
// zone is, for every device.
type ZoneRecord struct {
	Zone     string       `json:"zone"`
	ZoneID   certs.ZoneID `json:"zone_id"`
	HubAddrs []string     `json:"hub_addrs"`
}

// DeviceInfo is a device's own record in the devices bucket, which it
// keeps current itself.
type DeviceInfo struct {
	OS       string `json:"os"`
	Arch     string `json:"arch"`
	Software string `json:"software"`
	// Direct are the addresses (HOST:PORT) where the device takes direct
	// connections from other devices of the zone (pzp run --direct-listen).
	Direct []string `json:"direct,omitempty"`
}

// ServiceInfo describes a registered service; devices publish theirs in
// the zone state (bucket apps, key DEVICE/APP, an AppRecord).
type ServiceInfo struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Methods     []string `json:"methods,omitempty"`
	// TokenRequired: calls must present a service token (pzh tokens).
	TokenRequired bool `json:"token_required,omitempty"`
	// Streams: it takes byte streams (Dial), not calls and messages.
	Streams bool `json:"streams,omitempty"`
}

// AppRecord is the value of an apps/DEVICE/APP record.
type AppRecord struct {
	Services []ServiceInfo `json:"services"`
}
