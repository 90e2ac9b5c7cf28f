// Package sync replicates a zone's shared state between its hub and its
// devices: a store of records (bucket, key) → value with a version, kept on
// every node in bbolt, ordered by the hub, merged last-writer-wins under a
// hybrid logical clock, and carried over one stream of a device's session.
//
// The hub is the only sequencer: it numbers every change it accepts, and a
// device resumes from the last number it holds. Devices edit offline and
// push their edits when they reconnect. The package knows nothing of
// sessions or certificates; package zone hands it a stream and the
// authenticated device name.
//
// Files importing both this package and the standard library's sync name
// this one zsync.
package sync

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// HubNode is the node name of the hub in versions and permissions.
const HubNode = "hub"

// Buckets, one per category of zone state. The names are part of the wire
// format and of the local API (docs/PROTOCOL.md, "Synchronisation").
const (
	// BucketUser holds the user's identity (name, zone). Hub-only.
	BucketUser = "user"
	// BucketUserData holds the user's own data. Any device may write.
	BucketUserData = "userdata"
	// BucketCerts holds the zone CA, hub and device certificates, and
	// revocations (keys ca, hub, device/NAME, revoked/SERIAL). Hub-only.
	BucketCerts = "certs"
	// BucketPolicy holds policy rules. Hub-only.
	BucketPolicy = "policy"
	// BucketFriends holds friends' identities and zone CA certificates.
	// Hub-only.
	BucketFriends = "friends"
	// BucketTokens holds service tokens. Hub-only.
	BucketTokens = "tokens"
	// BucketDevices holds device identity records, key = device name. A
	// device may write only its own.
	BucketDevices = "devices"
	// BucketApps holds application identity records, key = DEVICE/APP. A
	// device may write only keys under its own name.
	BucketApps = "apps"
	// BucketAppData holds application data, key = APP/KEY. Any device may
	// write.
	BucketAppData = "appdata"
)

// Who may write a bucket.
type writeRule uint8

const (
	hubOnly   writeRule = iota // only the hub
	anyDevice                  // the hub and every device
	ownKey                     // the hub, and a device for key == its name
	ownPrefix                  // the hub, and a device for keys under "its name/"
)

var buckets = map[string]writeRule{
	BucketUser: hubOnly, BucketCerts: hubOnly, BucketPolicy: hubOnly, BucketFriends: hubOnly, BucketTokens: hubOnly,
	BucketUserData: anyDevice, BucketAppData: anyDevice,
	BucketDevices: ownKey, BucketApps: ownPrefix,
}

// Buckets lists the bucket names, sorted.
func Buckets() []string {
	return []string{BucketAppData, BucketApps, BucketCerts, BucketDevices, BucketFriends, BucketPolicy, BucketTokens, BucketUser, BucketUserData}
}

// HubOnly reports whether only the hub may write bucket.
func HubOnly(bucket string) bool {
	r, ok := buckets[bucket]
	return ok && r == hubOnly
}

// Limits, with why.
const (
	// MaxKey bounds a key: keys are names and paths, not data.
	MaxKey = 512
	// MaxValue bounds a value. Records travel in frames of at most 1 MiB
	// (transport.MaxFrameSize) and a batch must hold at least one record
	// with room to spare; bulk data belongs in service calls, not in state
	// that every device keeps a copy of.
	MaxValue = 256 << 10
	// maxNode bounds a node name (a device name: certs.ValidateName).
	maxNode = 63
)

// Errors callers tell apart.
var (
	// ErrPermission: the writer may not write this bucket or key.
	ErrPermission = errors.New("permission denied")
	// ErrInvalid: a bucket, key or value that is not acceptable.
	ErrInvalid = errors.New("invalid record")
	// ErrNotFound: no such key (or only a tombstone).
	ErrNotFound = errors.New("not found")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
	// ErrWatchOverflow: a watcher fell too far behind and was dropped.
	ErrWatchOverflow = errors.New("watch fell behind the changes and was stopped; start it again")
)

// CheckWrite says whether node (a device name, or HubNode) may write key in
// bucket, and why not. The hub enforces it on every edit a device pushes;
// devices check it too, to fail early.
func CheckWrite(node, bucket, key string) error {
	if err := CheckKey(bucket, key); err != nil {
		return err
	}
	if node == HubNode {
		return nil
	}
	switch buckets[bucket] {
	case anyDevice:
		return nil
	case ownKey:
		if key == node {
			return nil
		}
		return fmt.Errorf("%w: device %q may write only its own record %q in bucket %s, not %q", ErrPermission, node, node, bucket, key)
	case ownPrefix:
		if strings.HasPrefix(key, node+"/") {
			return nil
		}
		return fmt.Errorf("%w: device %q may write only keys under %q in bucket %s, not %q", ErrPermission, node, node+"/", bucket, key)
	}
	return fmt.Errorf("%w: bucket %s is written by the hub only (edit it with pzh on the hub)", ErrPermission, bucket)
}

// CheckKey validates a bucket name and a key in it.
func CheckKey(bucket, key string) error {
	if _, ok := buckets[bucket]; !ok {
		return fmt.Errorf("%w: unknown bucket %q (buckets: %s)", ErrInvalid, bucket, strings.Join(Buckets(), ", "))
	}
	if key == "" || len(key) > MaxKey {
		return fmt.Errorf("%w: key must be 1-%d bytes", ErrInvalid, MaxKey)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: key %q is not UTF-8", ErrInvalid, key)
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: key %q contains a control character", ErrInvalid, key)
		}
	}
	if bucket == BucketAppData || bucket == BucketApps {
		app, rest, ok := strings.Cut(key, "/")
		if !ok || rest == "" || !validName(app) {
			what := "APP/KEY, APP of lower-case letters, digits, '-', '_' or '.'"
			if bucket == BucketApps {
				what = "DEVICE/APP"
			}
			return fmt.Errorf("%w: key %q in bucket %s must be %s", ErrInvalid, key, bucket, what)
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Version orders the edits of one key: a hybrid logical clock reading
// (physical milliseconds, logical counter) and the node that made the
// edit, which breaks ties so every node picks the same winner.
type Version struct {
	_       struct{} `cbor:",toarray"`
	Wall    uint64   // Unix milliseconds
	Logical uint32
	Node    string
}

// Compare orders versions: wall, then logical, then node.
func (v Version) Compare(o Version) int {
	switch {
	case v.Wall != o.Wall:
		return cmp64(v.Wall, o.Wall)
	case v.Logical != o.Logical:
		return cmp64(uint64(v.Logical), uint64(o.Logical))
	}
	return strings.Compare(v.Node, o.Node)
}

func cmp64(a, b uint64) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

// Time is the physical part of the version.
func (v Version) Time() time.Time { return time.UnixMilli(int64(v.Wall)).UTC() }

func (v Version) String() string {
	return fmt.Sprintf("%s+%d@%s", v.Time().Format("2006-01-02T15:04:05.000Z"), v.Logical, v.Node)
}

// IsZero reports an unset version.
func (v Version) IsZero() bool { return v.Wall == 0 && v.Logical == 0 && v.Node == "" }

// Record is one entry of the replicated store. A deleted record is a
// tombstone: it has no value and beats older writes of its key.
type Record struct {
	Bucket  string  `cbor:"1,keyasint"`
	Key     string  `cbor:"2,keyasint"`
	Value   []byte  `cbor:"3,keyasint,omitempty"`
	Version Version `cbor:"4,keyasint"`
	Deleted bool    `cbor:"5,keyasint,omitempty"`
	// Seq is the hub's sequence number of the change (0: not yet accepted
	// by the hub, a local edit waiting to be pushed).
	Seq uint64 `cbor:"6,keyasint,omitempty"`
}

// check validates a record received from the network.
func (r *Record) check() error {
	if err := CheckKey(r.Bucket, r.Key); err != nil {
		return err
	}
	if len(r.Value) > MaxValue {
		return fmt.Errorf("%w: value of %d bytes is over the %d-byte limit", ErrInvalid, len(r.Value), MaxValue)
	}
	if r.Deleted && len(r.Value) > 0 {
		return fmt.Errorf("%w: a deletion carries a value", ErrInvalid)
	}
	if r.Version.Wall == 0 || r.Version.Node == "" || len(r.Version.Node) > maxNode {
		return fmt.Errorf("%w: bad version %v", ErrInvalid, r.Version)
	}
	return nil
}

// size approximates the encoded size of r, for batching.
func (r *Record) size() int {
	return len(r.Bucket) + len(r.Key) + len(r.Value) + len(r.Version.Node) + 32
}
