package api

import (
	"time"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/token"
)

// The answers of the daemons' status and admin endpoints, and the
// requests they take: what pzh status, pzh devices, pzp status and the
// other commands print. Their JSON is stable (docs/PROTOCOL.md).

// BindingsView is the answer of GET /v1/bindings.
type BindingsView struct {
	Version  uint64        `json:"version"`
	Bindings []BindingView `json:"bindings"`
}

// BindingView is one row of pzh bindings; its JSON is stable
// (docs/PROTOCOL.md).
type BindingView struct {
	ID       string     `json:"id"`
	From     string     `json:"from"` // DEVICE/APP (DEVICE when no app)
	To       string     `json:"to"`   // DEVICE/SERVICE
	Since    time.Time  `json:"since"`
	Calls    uint64     `json:"calls"`
	BytesIn  uint64     `json:"bytes_in"`  // towards the service
	BytesOut uint64     `json:"bytes_out"` // back to the application
	Token    string     `json:"token,omitempty"`
	Ended    *time.Time `json:"ended,omitempty"`
	Reason   string     `json:"reason,omitempty"` // why it ended
}

// DirectStatus is the direct part of a peer's status (pzp status): where
// this device takes direct connections, and the path to every other device.
type DirectStatus struct {
	// Listen are the addresses published for other devices.
	Listen []string `json:"listen"`
	// CallsDirect and CallsHub count the calls and messages sent to other
	// devices since pzp run started, by the path they took; Fallbacks,
	// those of CallsHub that went through the hub after a direct attempt
	// failed.
	CallsDirect uint64             `json:"calls_direct"`
	CallsHub    uint64             `json:"calls_hub"`
	Fallbacks   uint64             `json:"fallbacks"`
	Peers       []DirectPeerStatus `json:"peers"`
}

// FriendInviteRequest is the body of POST /v1/friends/invites.
type FriendInviteRequest struct {
	TTL string `json:"ttl,omitempty"` // Go duration; empty: pairing.DefaultFriendTTL
	// Code asks for a short code too (pzh friend accept --code).
	Code bool `json:"code,omitempty"`
}

// FriendInviteView is a friend invite: Token is set only when it is made.
type FriendInviteView struct {
	ID      string    `json:"id"`
	Token   string    `json:"token,omitempty"`
	State   string    `json:"state"` // open, expired, used, cancelled
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Friend is the petname of the zone that redeemed it.
	Friend string `json:"friend,omitempty"`
	// CodeNumber names a code invite; WrongCodes counts its wrong answers.
	// Code, the whole short code, is set only when it is created.
	CodeNumber uint32 `json:"code_number,omitempty"`
	WrongCodes int    `json:"wrong_codes,omitempty"`
	Code       string `json:"code,omitempty"`
}

// FriendAcceptRequest is the body of POST /v1/friends: redeem a friend
// token, naming the friend As.
type FriendAcceptRequest struct {
	Token string `json:"token,omitempty"`
	As    string `json:"as"`
	// Code and Addr, instead of Token: the short code the friend's hub
	// printed (pzh friend invite --code) and that hub's HOST:PORT.
	Code string `json:"code,omitempty"`
	Addr string `json:"addr,omitempty"`
}

// RemoveFriendResult is the answer of DELETE /v1/friends/{name}.
type RemoveFriendResult struct {
	Petname string `json:"petname"`
	// Told: the friend's hub was linked and was told to end the
	// friendship on its side too.
	Told bool `json:"told"`
	// Dropped: messages from that zone that waited for this zone's
	// devices, and messages for it that waited for its link, now dropped.
	Dropped int `json:"dropped"`
	// Rules: policy rules that still name the petname; they would apply
	// to a later friend given the same name.
	Rules []string `json:"rules,omitempty"`
}

// FriendView is one row of pzh friends; its JSON is stable.
type FriendView struct {
	Petname  string       `json:"petname"`
	Zone     string       `json:"zone"`
	ZoneID   certs.ZoneID `json:"zone_id"`
	HubAddrs []string     `json:"hub_addrs"`
	Added    time.Time    `json:"added"`
	// Invited: this hub printed the friend token the friend redeemed.
	Invited bool `json:"invited,omitempty"`
	// State of the link: online, connecting (this hub dials it) or
	// offline (waiting for the friend's hub to dial).
	State      string     `json:"state"`
	Transport  string     `json:"transport,omitempty"`
	RemoteAddr string     `json:"remote_addr,omitempty"`
	Since      *time.Time `json:"since,omitempty"`
	RTTMs      *float64   `json:"rtt_ms,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	// Calls and messages that crossed the link either way since it came up.
	Calls uint64 `json:"calls"`
	// Queue: messages for later kept here until the link is back.
	Queue int `json:"queue"`
	// Rules are the policy rules that name the petname, in the answer to
	// accepting or renaming: they apply to this friend now. RulesOld, on
	// renaming, name the old petname: they no longer apply to it.
	Rules    []string `json:"rules,omitempty"`
	RulesOld []string `json:"rules_old,omitempty"`
}

// FriendsView is the answer of GET /v1/friends.
type FriendsView struct {
	Version uint64       `json:"version"`
	Friends []FriendView `json:"friends"`
}

// RenameFriendRequest is the body of POST /v1/friends/{name}/rename.
type RenameFriendRequest struct {
	To string `json:"to"`
}

// DeviceView is one row of pzh devices; its JSON is stable (docs/PROTOCOL.md).
type DeviceView struct {
	Name       string `json:"name"`
	State      string `json:"state"` // online, asleep, offline, revoked
	Transport  string `json:"transport,omitempty"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	// Software and Protocol are what the device's Hello said (online
	// only); OtherVersion is set when they are not the hub's own: the device
	// runs another (usually older) pzp.
	Software     string     `json:"software,omitempty"`
	Protocol     uint       `json:"protocol,omitempty"`
	OtherVersion bool       `json:"other_version,omitempty"`
	Since        *time.Time `json:"since,omitempty"`
	LastActivity *time.Time `json:"last_activity,omitempty"`
	RTTMs        *float64   `json:"rtt_ms,omitempty"`
	CertExpires  time.Time  `json:"cert_expires"`
	Paired       time.Time  `json:"paired"`
	LastSeen     *time.Time `json:"last_seen,omitempty"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
	// Queue and QueueBytes: messages the hub keeps for the device.
	Queue      int   `json:"queue"`
	QueueBytes int64 `json:"queue_bytes"`
	// Wake: how the hub wakes the device (absent: it never registered).
	Wake *WakeView `json:"wake,omitempty"`
}

// DevicesView is the answer of GET /v1/devices.
type DevicesView struct {
	Version uint64       `json:"version"`
	Devices []DeviceView `json:"devices"`
}

// HubStatus is the answer of GET /v1/status.
type HubStatus struct {
	Version     uint64       `json:"version"`
	Zone        string       `json:"zone"`
	ZoneID      certs.ZoneID `json:"zone_id"`
	PublicAddrs []string     `json:"public_addrs"`
	Listen      string       `json:"listen"`
	Transports  []string     `json:"transports"`
	Started     time.Time    `json:"started"`
	Devices     int          `json:"devices"`
	Online      int          `json:"online"`
	CertExpires time.Time    `json:"cert_expires"`
	Software    string       `json:"software"`
	PID         int          `json:"pid"`
	// SyncSeq is the zone state's last sequence number.
	SyncSeq uint64 `json:"sync_seq"`
	// Friends and Linked count friend zones, and those linked now.
	Friends int `json:"friends"`
	Linked  int `json:"linked"`
	// Calls counts the calls, messages and streams the hub routed since
	// it started (its own deliveries not included).
	Calls uint64 `json:"calls"`
	// SyncUsage is the zone state's bytes in use, its quotas and the
	// nodes owning the most of it.
	SyncUsage zsync.Usage `json:"sync_usage"`
	// OtherSoftware names the online devices whose pzp is not the hub's
	// version ("DEVICE (SOFTWARE)"): upgrade them.
	OtherSoftware []string `json:"other_software,omitempty"`
}

// InviteRequest is the body of POST /v1/invites. Durations are Go duration
// strings ("15m", "2160h"); empty means the default.
type InviteRequest struct {
	Device       string `json:"device"`
	TTL          string `json:"ttl,omitempty"`
	Uses         int    `json:"uses,omitempty"`
	CertLifetime string `json:"cert_lifetime,omitempty"`
	// Code asks for a short code too (pzp pair --code).
	Code bool `json:"code,omitempty"`
}

// InviteView describes an invite; Token is set only when it is created.
type InviteView struct {
	ID           string    `json:"id"`
	Device       string    `json:"device"`
	State        string    `json:"state"` // open, expired, used, cancelled, burned (wrong codes)
	Uses         int       `json:"uses"`
	UsesLeft     int       `json:"uses_left"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires"`
	CertLifetime string    `json:"cert_lifetime"`
	Devices      []string  `json:"devices,omitempty"`
	Token        string    `json:"token,omitempty"`
	// CodeNumber names a code invite; WrongCodes counts its wrong answers.
	// Code, the whole short code, is set only when it is created.
	CodeNumber uint32 `json:"code_number,omitempty"`
	WrongCodes int    `json:"wrong_codes,omitempty"`
	Code       string `json:"code,omitempty"`
}

// RevokeResponse is the answer of POST /v1/devices/{name}/revoke.
type RevokeResponse struct {
	Device    string    `json:"device"`
	RevokedAt time.Time `json:"revoked_at"`
	WasOnline bool      `json:"was_online"`
}

// PeerStatus is the answer of GET /v1/status on the peer socket, and of
// pzp status; its JSON is stable (docs/PROTOCOL.md).
type PeerStatus struct {
	Version   uint64       `json:"version"`
	Running   bool         `json:"running"`
	State     string       `json:"state"` // online, connecting, renewing, stopped
	Zone      string       `json:"zone"`
	ZoneID    certs.ZoneID `json:"zone_id"`
	Device    string       `json:"device"`
	Hub       string       `json:"hub"`
	HubAddrs  []string     `json:"hub_addrs"`
	Transport string       `json:"transport,omitempty"`
	Session   string       `json:"session,omitempty"`
	Since     *time.Time   `json:"since,omitempty"`
	RTTMs     *float64     `json:"rtt_ms,omitempty"`
	// BytesSent and BytesReceived count the current session's wire bytes
	// (TLS records or QUIC packets), online only.
	BytesSent     uint64    `json:"bytes_sent,omitempty"`
	BytesReceived uint64    `json:"bytes_received,omitempty"`
	CertExpires   time.Time `json:"cert_expires"`
	CertRenews    time.Time `json:"cert_renews"`
	LastError     string    `json:"last_error,omitempty"`
	Software      string    `json:"software"`
	// Sync is the zone state synchronisation (absent for a peer without a
	// store).
	Sync *zsync.State `json:"sync,omitempty"`
	// Wake is the device's sleep and wakeup (absent when it never sleeps).
	Wake *PeerWakeStatus `json:"wake,omitempty"`
	// Envelopes counts the verdicts on signed calls and answers from
	// friend zones.
	Envelopes envelope.Counts `json:"envelopes"`
	// Direct is the direct listener and the path to each other device
	// (absent without direct connections).
	Direct *DirectStatus `json:"direct,omitempty"`
}

// UnpairResult is the answer of POST /v1/unpair and of pzp unpair.
type UnpairResult struct {
	Device   string `json:"device"`
	HubTold  bool   `json:"hub_told"`
	HubError string `json:"hub_error,omitempty"`
}

// PeerWakeStatus is the wake part of a peer's status (pzp status).
type PeerWakeStatus struct {
	SleepAfter string `json:"sleep_after"`
	// Listen is the local UDP socket for wake pings.
	Listen string `json:"listen"`
	// Endpoint is where the hub pings this device (the address it
	// observed), once it has confirmed this session's registration.
	Endpoint    string     `json:"endpoint,omitempty"`
	Asleep      *time.Time `json:"asleep_since,omitempty"`
	Sleeps      uint64     `json:"sleeps"`
	PingWakes   uint64     `json:"ping_wakes"`  // woken by a valid ping
	LocalWakes  uint64     `json:"local_wakes"` // woken by an app, an edit, renewal or check-in
	LastWake    *time.Time `json:"last_wake,omitempty"`
	BytesAsleep uint64     `json:"bytes_sent_asleep"` // sent from the wake socket while asleep: stays 0
	// Pings counts what arrived on the wake socket, by verdict.
	Pings wakeup.Counters `json:"pings"`
}

// TokenTemplateRequest is the body of POST /v1/tokens/templates.
type TokenTemplateRequest struct {
	Name    string `json:"name"`
	Replace bool   `json:"replace,omitempty"`
	token.Limits
}

// IssueRequest is the body of POST /v1/tokens.
type IssueRequest struct {
	Template string `json:"template"`
	Lot      string `json:"lot,omitempty"`
	Count    int    `json:"count,omitempty"` // default 1
}

// IssuedToken is one token of an IssueResult: Token is what the
// application presents; it is shown once and not kept by the hub.
type IssuedToken struct {
	ID    string `json:"id"`
	Token string `json:"token"`
	Lot   string `json:"lot,omitempty"`
}

// TokenView is one row of pzh tokens list.
type TokenView struct {
	ID       string    `json:"id"`
	Template string    `json:"template"`
	Lot      string    `json:"lot,omitempty"`
	Issued   time.Time `json:"issued"`
	// State: active, revoked, used (single use, used), expired.
	State string      `json:"state"`
	Usage token.Usage `json:"usage"`
	token.Limits
}

// WakeView is a device's wake state in pzh devices.
type WakeView struct {
	Method   string     `json:"method"`
	Endpoint string     `json:"endpoint"`
	Pings    uint64     `json:"pings"`   // sent since the hub started
	Limited  uint64     `json:"limited"` // held back by the rate cap
	LastPing *time.Time `json:"last_ping,omitempty"`
	Asleep   *time.Time `json:"asleep_since,omitempty"`
}

// WakeResult is the answer of POST /v1/devices/{name}/wake.
type WakeResult struct {
	Device string `json:"device"`
	// Online: the device is connected; nothing was sent.
	Online bool `json:"online,omitempty"`
	// Sent: a ping went out now (false: the rate cap held it back).
	Sent     bool   `json:"sent"`
	Endpoint string `json:"endpoint,omitempty"`
	// Ping is the sealed ping, hex, with ?print=1: made but not sent, for
	// an operator to send from elsewhere when debugging reachability.
	Ping string `json:"ping,omitempty"`
}

// DirectPeerStatus is the path to one other device of the zone.
type DirectPeerStatus struct {
	Device string `json:"device"`
	// Path is "direct" while a direct connection is up, else "hub".
	Path string `json:"path"`
	// Transport ("quic" or "tcp"), Addr (the other device's address),
	// Inbound (the other device dialled) and Since: the direct connection.
	Transport string     `json:"transport,omitempty"`
	Addr      string     `json:"addr,omitempty"`
	Inbound   bool       `json:"inbound,omitempty"`
	Since     *time.Time `json:"since,omitempty"`
	RTTMs     *float64   `json:"rtt_ms,omitempty"`
	// Hints are the addresses the device published.
	Hints       []string `json:"hints,omitempty"`
	CallsDirect uint64   `json:"calls_direct"`
	CallsHub    uint64   `json:"calls_hub"`
	Fallbacks   uint64   `json:"fallbacks"`
	// LastError says why the last direct attempt failed; RetryAfter is
	// when the next may be made.
	LastError  string     `json:"last_error,omitempty"`
	RetryAfter *time.Time `json:"retry_after,omitempty"`
}

// AddrsView is the answer of the hub's /v1/addrs endpoints: the zone's
// public addresses, in the order devices try them.
type AddrsView struct {
	Addrs []string `json:"addrs"`
}

// AddrRequest is the body of POST /v1/addrs and POST /v1/addrs/remove.
type AddrRequest struct {
	Addr string `json:"addr"`
}
