package api

import "time"

// ProviderSocketName is a provider's admin socket in its data directory
// (pzh provider serve). Each zone it serves has its own hub socket,
// HubSocketName, in the zone's directory.
const ProviderSocketName = "pzh-provider.sock"

// A provider's store and the directory of its zones, in its data
// directory: each zone's data directory is ProviderZonesDir/NAME.
const (
	ProviderStoreName = "provider.db"
	ProviderZonesDir  = "zones"
)

// ZoneLimits are what a provider allows one zone. Zero means no limit,
// except ZoneQuota, where zero means the hub's default.
type ZoneLimits struct {
	MaxDevices     int   `json:"max_devices"`
	ZoneQuota      int64 `json:"zone_quota"`  // bytes of zone state (keys and values)
	QueueBytes     int64 `json:"queue_bytes"` // bytes of messages kept for all its devices
	CallsPerSecond int   `json:"calls_per_second"`
}

// DefaultZoneLimits are a new zone's limits unless pzh provider zone add
// says otherwise: enough for a family's devices, small enough that one
// zone cannot take the machine.
var DefaultZoneLimits = ZoneLimits{MaxDevices: 50, ZoneQuota: 64 << 20, QueueBytes: 256 << 20, CallsPerSecond: 500}

// ProviderZone is one zone of a provider (GET /v1/zones).
type ProviderZone struct {
	Name   string     `json:"name"`
	ZoneID string     `json:"zone_id"`
	Dir    string     `json:"dir"` // the zone's data directory: pzh --data DIR ... manages it
	Added  time.Time  `json:"added"`
	Limits ZoneLimits `json:"limits"`
	// State is "starting", "serving", or "failed" (Error says why).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// Devices and Online come from the zone's hub while it serves.
	Devices int `json:"devices"`
	Online  int `json:"online"`
}

// ZoneAddRequest is POST /v1/zones.
type ZoneAddRequest struct {
	Name   string     `json:"name"`
	Limits ZoneLimits `json:"limits"`
}

// ZoneLimitsRequest is PUT /v1/zones/{zone}/limits: the fields set change.
type ZoneLimitsRequest struct {
	MaxDevices     *int   `json:"max_devices,omitempty"`
	ZoneQuota      *int64 `json:"zone_quota,omitempty"`
	QueueBytes     *int64 `json:"queue_bytes,omitempty"`
	CallsPerSecond *int   `json:"calls_per_second,omitempty"`
}

// ZoneRemoved is the answer to DELETE /v1/zones/{zone}: where the zone's
// data was moved.
type ZoneRemoved struct {
	Name   string `json:"name"`
	ZoneID string `json:"zone_id"`
	KeptIn string `json:"kept_in"`
}

// ProviderStatus is GET /v1/status of a provider.
type ProviderStatus struct {
	PublicAddrs []string  `json:"public_addrs"`
	Listen      string    `json:"listen"`
	Transports  []string  `json:"transports"`
	Zones       int       `json:"zones"`
	Serving     int       `json:"serving"`
	Started     time.Time `json:"started"`
	PID         int       `json:"pid"`
	Software    string    `json:"software"`
	// A cluster's node: its name, its own addresses, whether it serves
	// ("active") or waits for the cluster's lease ("standby"), since
	// when, and which node serves.
	Node       string    `json:"node,omitempty"`
	NodeAddrs  []string  `json:"node_addrs,omitempty"`
	Role       string    `json:"role,omitempty"`
	RoleSince  time.Time `json:"role_since,omitzero"`
	ActiveNode string    `json:"active_node,omitempty"`
}
