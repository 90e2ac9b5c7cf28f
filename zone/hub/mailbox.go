package hub

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/storefile"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/wire"
)

// The hub's mailbox: messages kept for devices that are asleep or offline,
// and how to wake each device. It is its own bbolt file, mailbox.db, apart
// from pzh.db: queued messages are bulky and churn, the zone's keys are
// neither, and a full or damaged mailbox must not put the keys at risk.

// MailboxDBName is the mailbox's file in the hub's data directory.
const MailboxDBName = "mailbox.db"

// Mailbox limits, with why.
const (
	// DefaultQueueLimit is how many messages may wait for one device: a
	// week of a chatty app's notifications, yet a bounded disk cost.
	DefaultQueueLimit = 1000
	// DefaultQueueBytes bounds the bodies waiting for one device, so 100
	// devices cannot take more than about 1.6 GB of the hub's disk.
	DefaultQueueBytes = 16 << 20
)

var (
	mbQueue = []byte("queue") // device → (seq → queuedMsg)
	mbWake  = []byte("wake")  // device → wakeRecord
	mbMeta  = []byte("meta")
)

// errQueueFull is a device's queue at its limit.
var errQueueFull = errors.New("queue full")

// errZoneQueueFull is the zone's queues together at their provider's
// limit (it is an errQueueFull too).
var errZoneQueueFull = fmt.Errorf("%w for the zone", errQueueFull)

// queuedMsg is one message waiting at the hub.
type queuedMsg struct {
	ID         string    `cbor:"1,keyasint"`
	FromZone   string    `cbor:"2,keyasint"`
	FromDevice string    `cbor:"3,keyasint"`
	FromApp    string    `cbor:"4,keyasint,omitempty"`
	Service    string    `cbor:"5,keyasint"`
	Method     string    `cbor:"6,keyasint,omitempty"`
	Body       []byte    `cbor:"7,keyasint"`
	Queued     time.Time `cbor:"8,keyasint"`
	Expires    time.Time `cbor:"9,keyasint"`
	// FromZoneID, Envelope and TTLMs: a message from a friend zone keeps
	// its sender's signature, which the device checks on delivery.
	FromZoneID string         `cbor:"10,keyasint,omitempty"`
	Envelope   *wire.Envelope `cbor:"11,keyasint,omitempty"`
	TTLMs      uint64         `cbor:"12,keyasint,omitempty"`
	// ToDevice is the device it is for (in a friend zone, for one in a
	// friend's outbox, outbox.go).
	ToDevice string `cbor:"13,keyasint,omitempty"`
}

// sender names who sent m, for telling messages apart: the sending
// device, with its zone when it is a friend's.
func (m *queuedMsg) sender() string {
	if m.FromZoneID != "" {
		return m.FromZoneID + "/" + m.FromDevice
	}
	return m.FromDevice
}

// wakeRecord is how the hub wakes a device: its latest registration, and
// whether its last session ended with it going to sleep.
type wakeRecord struct {
	Method   string    `cbor:"1,keyasint"`
	Endpoint string    `cbor:"2,keyasint"`
	ID       []byte    `cbor:"3,keyasint"`
	Key      []byte    `cbor:"4,keyasint"`
	Asleep   bool      `cbor:"5,keyasint,omitempty"`
	Since    time.Time `cbor:"6,keyasint,omitempty"` // asleep since
}

func (r *wakeRecord) registration() wakeup.Registration {
	reg := wakeup.Registration{Method: r.Method, Endpoint: r.Endpoint}
	copy(reg.Secret.ID[:], r.ID)
	copy(reg.Secret.Key[:], r.Key)
	return reg
}

// queueStat is a device's queue size.
type queueStat struct {
	n     int
	bytes int64
}

// mailbox is the hub's store of queued messages and wake registrations.
type mailbox struct {
	db       kv.DB
	limit    int
	maxBytes int64
	// zoneBytes, if not zero, bounds the bytes waiting for all the
	// zone's devices together (a provider's limit, Config.ZoneQueueBytes).
	zoneBytes int64

	mu    sync.Mutex
	stats map[string]queueStat
}

// openMailbox opens the mailbox at path, making it if create is set.
func openMailbox(path string, create bool, limit int, maxBytes int64) (*mailbox, error) {
	db, err := storefile.Open(path, storefile.Options{Create: create})
	if err != nil {
		return nil, err
	}
	return openMailboxOn(kv.OfBolt(db), limit, maxBytes)
}

// openMailboxOn readies the mailbox in db; it closes db if it fails.
func openMailboxOn(db kv.DB, limit int, maxBytes int64) (*mailbox, error) {
	m := &mailbox{db: db, limit: limit, maxBytes: maxBytes, stats: map[string]queueStat{}}
	err := db.Update(func(tx kv.Tx) error {
		for _, b := range [][]byte{mbQueue, mbWake, mbMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(mbMeta)
		if v := meta.Get(stores.KeyVersion); v != nil && binary.BigEndian.Uint64(v) > stores.StoreVersion {
			return fmt.Errorf("mailbox format %d is newer than this pzh understands (%d): upgrade pzh", binary.BigEndian.Uint64(v), stores.StoreVersion)
		}
		if err := meta.Put(stores.KeyVersion, u64key(stores.StoreVersion)); err != nil {
			return err
		}
		return tx.Bucket(mbQueue).ForEachBucket(func(dev []byte) error {
			var st queueStat
			err := tx.Bucket(mbQueue).Bucket(dev).ForEach(func(_, v []byte) error {
				var msg queuedMsg
				if err := transport.Unmarshal(v, &msg); err != nil {
					return err
				}
				st.n++
				st.bytes += int64(len(msg.Body))
				return nil
			})
			m.stats[string(dev)] = st
			return err
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open mailbox: %w", err)
	}
	return m, nil
}

func (m *mailbox) Close() error { return m.db.Close() }

func u64key(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// Put queues msg for device and returns its sequence number, or
// errQueueFull (wrapped, saying which limit) when the device's queue is at
// its limit.
func (m *mailbox) Put(device string, msg *queuedMsg) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats[device]
	switch {
	case st.n >= m.limit:
		return 0, fmt.Errorf("%w: %d messages wait for device %q, the hub's limit", errQueueFull, st.n, device)
	case st.bytes+int64(len(msg.Body)) > m.maxBytes:
		return 0, fmt.Errorf("%w: %d bytes wait for device %q and this message would pass the hub's limit of %d", errQueueFull, st.bytes, device, m.maxBytes)
	}
	if m.zoneBytes > 0 {
		var all int64
		for _, s := range m.stats {
			all += s.bytes
		}
		if all+int64(len(msg.Body)) > m.zoneBytes {
			return 0, fmt.Errorf("%w: %d bytes wait for the zone's devices and this message would pass its provider's limit of %d", errZoneQueueFull, all, m.zoneBytes)
		}
	}
	var seq uint64
	err := m.db.Update(func(tx kv.Tx) error {
		b, err := tx.Bucket(mbQueue).CreateBucketIfNotExists([]byte(device))
		if err != nil {
			return err
		}
		if seq, err = b.NextSequence(); err != nil {
			return err
		}
		return stores.PutCBOR(b, u64key(seq), msg)
	})
	if err != nil {
		return 0, err
	}
	m.stats[device] = queueStat{st.n + 1, st.bytes + int64(len(msg.Body))}
	return seq, nil
}

// queued is a message with its place in its device's queue.
type queued struct {
	seq uint64
	msg *queuedMsg
}

// Next returns the device's messages after seq, oldest first, at most n.
func (m *mailbox) Next(device string, after uint64, n int) ([]queued, error) {
	var out []queued
	err := m.db.View(func(tx kv.Tx) error {
		b := tx.Bucket(mbQueue).Bucket([]byte(device))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.Seek(u64key(after + 1))
		for ; k != nil && len(out) < n; k, v = c.Next() {
			var msg queuedMsg
			if err := transport.Unmarshal(v, &msg); err != nil {
				return fmt.Errorf("queued message %d of %q: %w", binary.BigEndian.Uint64(k), device, err)
			}
			out = append(out, queued{binary.BigEndian.Uint64(k), &msg})
		}
		return nil
	})
	return out, err
}

// Remove deletes delivered, expired or undeliverable messages.
func (m *mailbox) Remove(device string, seqs ...uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var removed queueStat
	err := m.db.Update(func(tx kv.Tx) error {
		removed = queueStat{}
		b := tx.Bucket(mbQueue).Bucket([]byte(device))
		if b == nil {
			return nil
		}
		for _, seq := range seqs {
			v := b.Get(u64key(seq))
			if v == nil {
				continue
			}
			var msg queuedMsg
			if transport.Unmarshal(v, &msg) == nil {
				removed.bytes += int64(len(msg.Body))
			}
			removed.n++
			if err := b.Delete(u64key(seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	st := m.stats[device]
	st.n -= removed.n
	st.bytes -= removed.bytes
	if st.n <= 0 {
		delete(m.stats, device)
	} else {
		m.stats[device] = st
	}
	return nil
}

// Expired lists the messages past their time to live, by device.
func (m *mailbox) Expired(now time.Time) (map[string][]uint64, error) {
	out := map[string][]uint64{}
	err := m.db.View(func(tx kv.Tx) error {
		return tx.Bucket(mbQueue).ForEachBucket(func(dev []byte) error {
			return tx.Bucket(mbQueue).Bucket(dev).ForEach(func(k, v []byte) error {
				// Only the expiry: the decoder skips the body rather than
				// copy up to 16 MiB a device every minute.
				var msg struct {
					Expires time.Time `cbor:"9,keyasint"`
				}
				if err := transport.Unmarshal(v, &msg); err != nil || !now.Before(msg.Expires) {
					out[string(dev)] = append(out[string(dev)], binary.BigEndian.Uint64(k))
				}
				return nil
			})
		})
	})
	return out, err
}

// Drop deletes a device's queue and wake registration (it was revoked).
func (m *mailbox) Drop(device string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.db.Update(func(tx kv.Tx) error {
		if tx.Bucket(mbQueue).Bucket([]byte(device)) != nil {
			if err := tx.Bucket(mbQueue).DeleteBucket([]byte(device)); err != nil {
				return err
			}
		}
		return tx.Bucket(mbWake).Delete([]byte(device))
	})
	if err == nil {
		delete(m.stats, device)
	}
	return err
}

// Stat is a device's queue size.
func (m *mailbox) Stat(device string) queueStat {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats[device]
}

// Devices lists the devices that have messages waiting.
func (m *mailbox) Devices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.stats))
	for d := range m.stats {
		out = append(out, d)
	}
	return out
}

// SaveWake stores a device's wake record.
func (m *mailbox) SaveWake(device string, rec *wakeRecord) error {
	return m.db.Update(func(tx kv.Tx) error { return stores.PutCBOR(tx.Bucket(mbWake), []byte(device), rec) })
}

// Wakes reads every wake record.
func (m *mailbox) Wakes() (map[string]*wakeRecord, error) {
	out := map[string]*wakeRecord{}
	err := m.db.View(func(tx kv.Tx) error {
		return tx.Bucket(mbWake).ForEach(func(k, v []byte) error {
			var rec wakeRecord
			if err := transport.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("wake record of %q: %w", k, err)
			}
			out[string(k)] = &rec
			return nil
		})
	})
	return out, err
}
