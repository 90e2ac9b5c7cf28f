package sync

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	gosync "sync"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/transport"
)

// Quotas on the zone state. Every device keeps a copy of all of it and a
// new device downloads all of it when it pairs, so one device must not be
// able to fill every other device's disk: the hub counts, for each node,
// the bytes of the live records whose version it made (the last writer
// owns a record: overwriting another device's record moves its bytes to
// the writer; a deletion frees them), and refuses a push that would take
// the device or the zone over its quota. Edits that shrink what a device
// (or the zone) holds are always taken, so a device over its quota can
// clean up; the hub's own writes are never refused, but count towards the
// zone's total.

// Quota defaults, with why.
const (
	// DefaultDeviceQuota is how much of the zone state one device may
	// own: 256 records of the largest size (MaxValue), or hundreds of
	// thousands of the small records applications keep (settings,
	// identities, pointers to data held elsewhere). It stops a runaway
	// application long before it hurts a phone's storage.
	DefaultDeviceQuota int64 = 64 << 20
	// DefaultZoneQuota is how much the whole zone state may hold: eight
	// devices at their full quota. It bounds what every device stores
	// and what a newly paired device downloads (well under a minute at
	// the ~100 MiB in 8 s measured on a LAN).
	DefaultZoneQuota int64 = 512 << 20
)

// recordBytes is what a live record counts towards quotas: its key and its
// value, the bytes that grow with what a writer chooses to store.
func recordBytes(key string, value []byte) int64 { return int64(len(key) + len(value)) }

// usage is the hub's count of live bytes by owning node, as committed.
// A write transaction gathers its changes in txn.usage; they are added
// here after the commit, so an aborted transaction leaves no trace.
type usage struct {
	mu     gosync.Mutex
	byNode map[string]int64
	total  int64
}

func (u *usage) get(node string) (own, total int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byNode[node], u.total
}

func (u *usage) add(delta map[string]int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for n, d := range delta {
		u.total += d
		if v := u.byNode[n] + d; v != 0 {
			u.byNode[n] = v
		} else {
			delete(u.byNode, n)
		}
	}
}

// scanUsage counts the live bytes of every record: once, when the hub's
// store opens, so the count is derived from the records themselves and
// cannot drift from them across restarts.
func scanUsage(tx kv.Tx) (map[string]int64, int64, error) {
	by := map[string]int64{}
	var total int64
	err := tx.Bucket(bRecords).ForEach(func(bk, v []byte) error {
		var st stored
		if err := transport.Unmarshal(v, &st); err != nil {
			return corrupt(bk, err)
		}
		if st.Deleted {
			return nil
		}
		_, key := splitKey(bk)
		n := recordBytes(key, st.Value)
		by[st.Version.Node] += n
		total += n
		return nil
	})
	return by, total, err
}

// account notes, in the transaction, that rec (owned by its version's
// node) replaces cur.
func (t *txn) account(key string, cur *stored, rec *Record) {
	if !t.s.hub {
		return
	}
	if t.usage == nil {
		t.usage = map[string]int64{}
	}
	if cur != nil && !cur.Deleted {
		t.usage[cur.Version.Node] -= recordBytes(key, cur.Value)
	}
	if !rec.Deleted {
		t.usage[rec.Version.Node] += recordBytes(key, rec.Value)
	}
}

// overQuota says why the hub refuses device's edit r of a key holding cur,
// or "" if it takes it. Usage is the committed count plus what this
// transaction changed so far, so the edits of one push, and of pushes
// sharing a transaction, add up.
func (t *txn) overQuota(device string, cur *stored, r *Record) string {
	own, total := t.s.usage.get(device)
	own += t.usage[device]
	for _, d := range t.usage {
		total += d
	}
	var add, freedOwn, freedZone int64
	if !r.Deleted {
		add = recordBytes(r.Key, r.Value)
	}
	if cur != nil && !cur.Deleted {
		freedZone = recordBytes(r.Key, cur.Value)
		if cur.Version.Node == device {
			freedOwn = freedZone
		}
	}
	if grow := add - freedOwn; grow > 0 && own+grow > t.s.opts.DeviceQuota {
		return fmt.Sprintf("over the device quota: device %q holds %s of the zone state, and this edit would bring it to %s, over its %s limit; "+
			"delete some of its data, or ask the hub's operator to raise it (pzh serve --device-quota)",
			device, FormatSize(own), FormatSize(own+grow), FormatSize(t.s.opts.DeviceQuota))
	}
	if grow := add - freedZone; grow > 0 && total+grow > t.s.opts.ZoneQuota {
		return fmt.Sprintf("over the zone quota: the zone state holds %s, and this edit would bring it to %s, over its %s limit; "+
			"delete some data, or ask the hub's operator to raise it (pzh serve --zone-quota)",
			FormatSize(total), FormatSize(total+grow), FormatSize(t.s.opts.ZoneQuota))
	}
	return ""
}

// Usage is how much the zone state holds, as the hub counts it for its
// quotas (pzh status).
type Usage struct {
	// Bytes is the key and value bytes of every live record.
	Bytes       int64 `json:"bytes"`
	ZoneQuota   int64 `json:"zone_quota"`
	DeviceQuota int64 `json:"device_quota"`
	// Nodes are the nodes owning the most bytes (the hub included),
	// largest first, at most maxUsageNodes.
	Nodes []NodeUsage `json:"nodes"`
}

// NodeUsage is what one node owns of the zone state.
type NodeUsage struct {
	Node  string `json:"node"`
	Bytes int64  `json:"bytes"`
}

// maxUsageNodes bounds the nodes Usage lists: enough to find who fills
// the zone, short enough for a status line.
const maxUsageNodes = 5

// Usage reports the hub's count of the zone state's bytes and its quotas.
func (s *Store) Usage() Usage {
	u := Usage{ZoneQuota: s.opts.ZoneQuota, DeviceQuota: s.opts.DeviceQuota, Nodes: []NodeUsage{}}
	s.usage.mu.Lock()
	u.Bytes = s.usage.total
	for n, b := range s.usage.byNode {
		u.Nodes = append(u.Nodes, NodeUsage{Node: n, Bytes: b})
	}
	s.usage.mu.Unlock()
	slices.SortFunc(u.Nodes, func(a, b NodeUsage) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.Node, b.Node))
	})
	if len(u.Nodes) > maxUsageNodes {
		u.Nodes = u.Nodes[:maxUsageNodes]
	}
	return u
}

// FormatSize shows a byte count the way quota refusals and status lines
// do: "812 B", "3.5 KiB", "1.95 KiB", "64 MiB".
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), ""
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v, suffix = v/unit, s
		if v < unit && v > -unit {
			break
		}
	}
	// Two decimals, so a limit of 2000 bytes does not show as 2.0 KiB.
	t := strings.TrimRight(strings.TrimRight(strconv.FormatFloat(v, 'f', 2, 64), "0"), ".")
	return t + " " + suffix
}
