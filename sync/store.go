package sync

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/transport"
	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/storefile"
)

// FileName is the store's file inside a hub's or a device's data
// directory.
const FileName = "sync.db"

// formatVersion is the on-disk layout version. History: 1 — first.
const formatVersion = 1

// Store defaults, with why.
const (
	// DefaultTombstoneRetention is how long the hub keeps a deletion that
	// some device has not yet seen. A device away longer gets a full
	// resync instead (and its offline edits older than the compacted
	// deletions are refused rather than allowed to resurrect deleted
	// keys). A month covers holidays and a device left in a drawer.
	DefaultTombstoneRetention = 30 * 24 * time.Hour
	// DefaultMaxClockAhead is how far ahead of the hub's clock a device's
	// edit may be stamped. A device whose clock runs far ahead would
	// otherwise win every conflict for as long as the difference lasts.
	DefaultMaxClockAhead = 10 * time.Minute
)

// Options configures a store.
type Options struct {
	// Node is the name this node's edits carry: the device name, or
	// HubNode for the hub.
	Node   string
	Now    func() time.Time
	Logger *slog.Logger
	// OnChange, if set, is called after anything State reports changed.
	OnChange func()

	// MustExist refuses to create the file: a store that existed and is
	// gone is lost data, not a fresh start (storefile.ErrMissing).
	MustExist bool

	// Hub only.
	TombstoneRetention time.Duration
	MaxClockAhead      time.Duration
	// Device only. CheckEpoch decides whether the device may give up what
	// it holds for a hub of another epoch than the one it synced with,
	// given the hub's proof (nil if the hub sent none); an error refuses
	// the sync and keeps the device's data. A device that never synced
	// takes any epoch, but still refuses a proof that is present and
	// wrong. Nil refuses every change of epoch.
	CheckEpoch func(epoch string, proof []byte) error
	// Device only. Witness picks the hub's records worth pushing back to
	// a hub restored from a backup (restore.go) besides the device's own
	// edits: those the hub can check (revocations it signed).
	Witness func(bucket, key string) bool
	// Hub only. Vouch decides a record a device pushed that carries the
	// hub's own version (a restored hub's record, pushed back): a nil
	// error takes it as the hub's own where the hub holds nothing for
	// the key, an error refuses it with that reason. A nil Vouch refuses
	// them all.
	Vouch func(device string, r Record) error
	// DeviceQuota and ZoneQuota bound the bytes of live records one
	// device may own and the zone may hold (quota.go); zero means
	// DefaultDeviceQuota and DefaultZoneQuota.
	DeviceQuota int64
	ZoneQuota   int64
}

// bbolt layout. Every record lives under bucketKey(bucket, key) in
// bRecords; the hub also indexes them by sequence number.
var (
	bMeta     = []byte("meta")
	bRecords  = []byte("records")
	bLog      = []byte("log")     // hub: seq → record key, one entry per record (its latest change)
	bTombs    = []byte("tombs")   // hub: seq → record key, deletions only (compaction)
	bAcks     = []byte("acks")    // hub: device → last sequence it confirmed
	bPending  = []byte("pending") // peer: pending id → record key, local edits to push, oldest first
	kFormat   = []byte("format")
	kRole     = []byte("role")
	kNode     = []byte("node")
	kEpoch    = []byte("epoch")   // hub: its own; peer: the hub's it synced with
	kSeq      = []byte("seq")     // hub: last assigned; peer: last applied
	kFloor    = []byte("floor")   // hub: deletions up to here were compacted
	kHorizon  = []byte("horizon") // hub: greatest version of a deletion compacted before all devices saw it
	kHLC      = []byte("hlc")
	kGen      = []byte("gen")      // peer: full-resync generation
	kFull     = []byte("full")     // peer: a full resync is under way
	kKeep     = []byte("keep")     // peer: that resync is with a restored hub: push back, do not drop (restore.go)
	kRestored = []byte("restored") // hub: the epochs of the zone states it was restored from, space-separated, newest first
	kPendID   = []byte("pendid")
	roleHub   = "hub"
	rolePeer  = "peer"
	allBucket = [][]byte{bMeta, bRecords, bLog, bTombs, bAcks, bPending}
)

// appendFill is how full bbolt fills a page of an index whose keys only
// grow before splitting it.
const appendFill = 0.95

// stored is a record as kept in bRecords.
type stored struct {
	Value   []byte  `cbor:"1,keyasint,omitempty"`
	Version Version `cbor:"2,keyasint"`
	Deleted bool    `cbor:"3,keyasint,omitempty"`
	Seq     uint64  `cbor:"4,keyasint,omitempty"`
	// Peer: the full-resync generation that last confirmed it.
	Gen uint64 `cbor:"5,keyasint,omitempty"`
	// Peer: the pending id of a local edit not yet accepted by the hub.
	Pending uint64 `cbor:"6,keyasint,omitempty"`
	// Hub: when the change was accepted, Unix ms (tombstone retention).
	Accepted uint64 `cbor:"7,keyasint,omitempty"`
	// Peer: the latest record of the key from the hub that arrived while
	// a newer local edit was pending, for if the hub refuses the edit.
	Shadow *Record `cbor:"8,keyasint,omitempty"`
}

func (st *stored) record(bucket, key string) Record {
	return Record{Bucket: bucket, Key: key, Value: st.Value, Version: st.Version, Deleted: st.Deleted, Seq: st.Seq}
}

// Store is one node's copy of the zone state, in a bbolt file: the hub's
// (OpenHub) or a device's (OpenPeer).
type Store struct {
	db    kv.DB
	hub   bool
	opts  Options
	log   *slog.Logger
	clock clock
	grp   group
	watch broadcaster

	// head is the hub's last sequence number; notify is closed and
	// replaced whenever it moves, waking the feeds of connected devices.
	head atomic.Uint64
	// version moves with every commit that changed a record, local edits
	// included (Version).
	version  atomic.Uint64
	floor    atomic.Uint64 // hub: the compaction floor
	latest   recent        // hub: the latest changes, for live feeds
	notifyMu gosync.Mutex
	notify   chan struct{}

	acksMu gosync.Mutex
	acks   map[string]uint64 // hub: confirmations not yet written

	// epochProof (hub) is sent to every device with the hub's epoch:
	// the zone's signed word that this epoch is its zone state (see
	// Options.CheckEpoch).
	epochProof atomic.Pointer[[]byte]
	usage      usage // hub: live bytes by owner, for quotas
	// diskFullLogged: when the hub last logged edits it deferred for a
	// full disk (unix ns), so that a long spell logs every 10 s, not per push.
	diskFullLogged atomic.Int64

	// peer state
	stMu     gosync.Mutex
	st       State
	pushWake chan struct{} // a local edit is waiting to be pushed
	verdicts verdicts      // the hub's answers, for those awaiting them
}

// OpenHub opens (creating if needed) the hub's store at path.
func OpenHub(path string, opts Options) (*Store, error) {
	return open(path, true, hubDefaults(opts))
}

func hubDefaults(opts Options) Options {
	opts.Node = HubNode
	if opts.TombstoneRetention == 0 {
		opts.TombstoneRetention = DefaultTombstoneRetention
	}
	if opts.MaxClockAhead == 0 {
		opts.MaxClockAhead = DefaultMaxClockAhead
	}
	if opts.DeviceQuota == 0 {
		opts.DeviceQuota = DefaultDeviceQuota
	}
	if opts.ZoneQuota == 0 {
		opts.ZoneQuota = DefaultZoneQuota
	}
	return opts
}

// OpenPeer opens (creating if needed) a device's store at path; opts.Node
// is the device name.
func OpenPeer(path string, opts Options) (*Store, error) {
	if opts.Node == "" || opts.Node == HubNode || len(opts.Node) > maxNode {
		return nil, fmt.Errorf("sync store: bad device name %q", opts.Node)
	}
	return open(path, false, opts)
}

func open(path string, hub bool, opts Options) (*Store, error) {
	db, err := storefile.Open(path, storefile.Options{Create: !opts.MustExist})
	if err != nil {
		return nil, err
	}
	return openOn(kv.OfBolt(db), path, hub, opts)
}

// OpenHubOn opens the hub's zone state in db (a cluster's PostgreSQL,
// say); name says which it is in errors. An empty db is made a zone
// state unless opts.MustExist.
func OpenHubOn(db kv.DB, name string, opts Options) (*Store, error) {
	return openOn(db, name, true, hubDefaults(opts))
}

func openOn(db kv.DB, path string, hub bool, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{db: db, hub: hub, opts: opts, log: opts.Logger, notify: make(chan struct{}), acks: map[string]uint64{}, pushWake: make(chan struct{}, 1)}
	s.clock.now = opts.Now
	s.grp = group{db: db, s: s}
	if err := s.init(path); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(path string) error {
	role := rolePeer
	if s.hub {
		role = roleHub
	}
	return s.db.Update(func(tx kv.Tx) error {
		for _, b := range allBucket {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bMeta)
		if f := m.Get(kFormat); f == nil && s.opts.MustExist {
			return fmt.Errorf("%s holds no zone state, though one was made: %w", path, storefile.ErrMissing)
		} else if f == nil {
			epoch := ""
			if s.hub {
				b := make([]byte, 16)
				rand.Read(b)
				epoch = hex.EncodeToString(b)
			}
			m.Put(kFormat, u64(formatVersion))
			m.Put(kRole, []byte(role))
			m.Put(kNode, []byte(s.opts.Node))
			m.Put(kEpoch, []byte(epoch))
		} else if v := getU64(f); v != formatVersion {
			return fmt.Errorf("%s has store format %d; this pzone understands %d", path, v, formatVersion)
		}
		if r := string(m.Get(kRole)); r != role {
			return fmt.Errorf("%s is a %s store, not a %s store", path, r, role)
		}
		if n := string(m.Get(kNode)); n != s.opts.Node {
			return fmt.Errorf("%s belongs to node %q, not %q", path, n, s.opts.Node)
		}
		if h := m.Get(kHLC); len(h) == 20 {
			s.clock.wall, s.clock.logical, s.clock.phys = binary.BigEndian.Uint64(h), binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint64(h[12:])
		}
		seq := getU64(m.Get(kSeq))
		s.head.Store(seq)
		s.floor.Store(getU64(m.Get(kFloor)))
		if s.hub {
			by, total, err := scanUsage(tx)
			if err != nil {
				return err
			}
			s.usage.byNode, s.usage.total = by, total
		}
		if !s.hub {
			n := tx.Bucket(bPending).KeyN()
			s.st = State{LastSeq: seq, HubSeq: seq, Pending: n, Phase: PhaseOffline, FullResync: m.Get(kFull) != nil}
		}
		return nil
	})
}

// Close closes the store; watchers end with ErrClosed.
func (s *Store) Close() error {
	s.watch.close()
	return s.db.Close()
}

// SetEpochProof sets the proof of its epoch the hub sends devices from
// now on (opaque to this package).
func (s *Store) SetEpochProof(p []byte) { s.epochProof.Store(&p) }

func (s *Store) proof() []byte {
	if p := s.epochProof.Load(); p != nil {
		return *p
	}
	return nil
}

// Epoch is the hub's epoch: on the hub its own, on a device the one it
// synced with ("" before the first sync).
func (s *Store) Epoch() string {
	e, err := s.ReadEpoch()
	if err != nil {
		s.log.Error("read the zone state's epoch", "err", err)
	}
	return e
}

// ReadEpoch is Epoch, with the error of a store that could not be read.
func (s *Store) ReadEpoch() (string, error) {
	var e string
	err := s.view(func(tx kv.Tx) error {
		e = string(tx.Bucket(bMeta).Get(kEpoch))
		return nil
	})
	return e, err
}

// Hub reports whether this is the hub's store.
func (s *Store) Hub() bool { return s.hub }

// Head is the hub's last sequence number, or the last one a device applied.
func (s *Store) Head() uint64 { return s.head.Load() }

// Version moves whenever a record changes (unlike Head on a device, which
// local edits do not move): what is derived from the records and cached
// is stale once it moves.
func (s *Store) Version() uint64 { return s.version.Load() }

// changed returns a channel closed at the next commit that moves Head.
func (s *Store) changed() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

func (s *Store) afterCommit(t *txn) {
	if s.hub && len(t.changed) > 0 {
		s.latest.add(t.changed) // before head moves, so a feed woken by it finds them
	}
	if len(t.changed) > 0 {
		s.version.Add(1)
	}
	if len(t.usage) > 0 {
		s.usage.add(t.usage)
	}
	if t.seqSet && t.seq != s.head.Load() {
		s.head.Store(t.seq)
		s.notifyMu.Lock()
		close(s.notify)
		s.notify = make(chan struct{})
		s.notifyMu.Unlock()
	}
	if !s.hub && (t.pendingDelta != 0 || t.seqSet || t.local) {
		s.stMu.Lock()
		s.st.Pending += t.pendingDelta
		if t.seqSet {
			s.st.LastSeq = t.seq
		}
		s.stMu.Unlock()
		if t.local {
			select {
			case s.pushWake <- struct{}{}:
			default:
			}
		}
		s.onChange()
	}
	if len(t.changed) > 0 {
		s.watch.publish(t.changed)
	}
}

func (s *Store) onChange() {
	if s.opts.OnChange != nil {
		s.opts.OnChange()
	}
}

// finish writes the per-transaction meta: sequence and clock.
func (t *txn) finish() error {
	m := t.tx.Bucket(bMeta)
	if t.seqSet {
		if err := m.Put(kSeq, u64(t.seq)); err != nil {
			return err
		}
	}
	w, l, p := t.s.clock.state()
	h := make([]byte, 20)
	binary.BigEndian.PutUint64(h, w)
	binary.BigEndian.PutUint32(h[8:], l)
	binary.BigEndian.PutUint64(h[12:], p)
	return m.Put(kHLC, h)
}

func (t *txn) nextSeq() uint64 {
	if !t.seqSet {
		t.seq, t.seqSet = getU64(t.tx.Bucket(bMeta).Get(kSeq)), true
	}
	t.seq++
	return t.seq
}

func (t *txn) setSeq(seq uint64) { t.seq, t.seqSet = seq, true }

// write runs fn in a grouped, fsync'd write transaction.
func (s *Store) write(fn func(*txn) error) error {
	return dbErr(s.grp.do(fn))
}

// view runs fn in a read transaction.
// Snapshot begins a read-only transaction: a consistent view of the
// whole file for a backup to copy (its WriteTo writes Size bytes) while
// the store goes on. Roll it back as soon as it is copied: until then a
// commit that must grow the file waits for it, holding every writer up.
func (s *Store) Snapshot() (*bolt.Tx, error) {
	db := kv.BoltOf(s.db)
	if db == nil {
		return nil, errNotFile
	}
	return db.Begin(false)
}

// errNotFile: a file's operation on a store kept elsewhere.
var errNotFile = errors.New("the zone state is not kept in a file here (a cluster's database holds it): back it up with the database's own tools")

// view runs fn in a read transaction.
func (s *Store) view(fn func(kv.Tx) error) error {
	return dbErr(s.db.View(fn))
}

// dbErr reports a closed store as ErrClosed.
func dbErr(err error) error {
	if errors.Is(err, kv.ErrClosed) {
		return ErrClosed
	}
	return err
}

// ---- local edits ----

// Put writes value under (bucket, key) as this node's edit, and returns
// once it is durable. On a device the edit is pending until the hub
// accepts it; on the hub it is accepted at once.
func (s *Store) Put(bucket, key string, value []byte) (Record, error) {
	if len(value) > MaxValue {
		return Record{}, fmt.Errorf("%w: value of %d bytes is over the %d-byte limit", ErrInvalid, len(value), MaxValue)
	}
	return s.edit(Record{Bucket: bucket, Key: key, Value: bytes.Clone(value)})
}

// Delete writes a tombstone for (bucket, key); ErrNotFound if there is no
// live record.
func (s *Store) Delete(bucket, key string) (Record, error) {
	return s.edit(Record{Bucket: bucket, Key: key, Deleted: true})
}

func (s *Store) edit(rec Record) (Record, error) {
	if err := CheckWrite(s.opts.Node, rec.Bucket, rec.Key); err != nil {
		return Record{}, err
	}
	bk := bucketKey(rec.Bucket, rec.Key)
	err := s.write(func(t *txn) error {
		cur, err := getStored(t.tx, bk)
		if err != nil {
			return err
		}
		if rec.Deleted && (cur == nil || cur.Deleted) {
			return refusal{fmt.Errorf("%w: no key %q in bucket %s", ErrNotFound, rec.Key, rec.Bucket)}
		}
		rec.Version = s.clock.next(s.opts.Node)
		if s.hub {
			rec.Seq = t.hubPut(bk, cur, &rec, uint64(s.opts.Now().UnixMilli()))
			return nil
		}
		return t.peerLocal(bk, cur, &rec)
	})
	if err != nil {
		return Record{}, err
	}
	return rec, nil
}

// hubPut stores rec as the key's latest change under a new sequence
// number, replacing cur (which rec must beat).
func (t *txn) hubPut(bk []byte, cur *stored, rec *Record, now uint64) uint64 {
	seq := t.nextSeq()
	lg, tombs := t.tx.Bucket(bLog), t.tx.Bucket(bTombs)
	// Sequence numbers only grow, so pages split at the end: fill them
	// (bbolt's default half-fills, doubling the index on disk and in RAM).
	kv.SetFill(lg, appendFill)
	kv.SetFill(tombs, appendFill)
	if cur != nil {
		lg.Delete(u64(cur.Seq))
		if cur.Deleted {
			tombs.Delete(u64(cur.Seq))
		}
	}
	t.account(rec.Key, cur, rec)
	putStored(t.tx, bk, &stored{Value: rec.Value, Version: rec.Version, Deleted: rec.Deleted, Seq: seq, Accepted: now})
	lg.Put(u64(seq), bk)
	if rec.Deleted {
		tombs.Put(u64(seq), bk)
	}
	rec.Seq = seq
	t.changed = append(t.changed, *rec)
	return seq
}

// peerLocal stores a local edit and queues it for the hub.
func (t *txn) peerLocal(bk []byte, cur *stored, rec *Record) error {
	m, pend := t.tx.Bucket(bMeta), t.tx.Bucket(bPending)
	kv.SetFill(pend, appendFill)
	id := getU64(m.Get(kPendID)) + 1
	m.Put(kPendID, u64(id))
	st := &stored{Value: rec.Value, Version: rec.Version, Deleted: rec.Deleted, Pending: id, Gen: getU64(m.Get(kGen))}
	if cur != nil && cur.Pending != 0 {
		st.Shadow = cur.Shadow
		pend.Delete(u64(cur.Pending))
	} else {
		t.pendingDelta++
	}
	if err := pend.Put(u64(id), bk); err != nil {
		return err
	}
	if err := putStored(t.tx, bk, st); err != nil {
		return err
	}
	t.changed = append(t.changed, *rec)
	t.local = true
	return nil
}

// Get returns the record of (bucket, key). A deletion comes back with
// Deleted set; ok is false when the key holds nothing at all.
func (s *Store) Get(bucket, key string) (rec Record, ok bool, err error) {
	if err := CheckKey(bucket, key); err != nil {
		return Record{}, false, err
	}
	err = s.view(func(tx kv.Tx) error {
		st, err := getStored(tx, bucketKey(bucket, key))
		if st != nil {
			rec, ok = st.record(bucket, key), true
		}
		return err
	})
	return rec, ok, err
}

// List calls fn for each live record of bucket whose key starts with
// prefix, in key order. It reads in chunks, so a long listing does not
// hold one read transaction (which would stall the file's growth) and fn
// may take its time.
func (s *Store) List(bucket, prefix string, fn func(Record) error) error {
	if _, ok := buckets[bucket]; !ok {
		return CheckKey(bucket, "-")
	}
	start := bucketKey(bucket, prefix)
	const chunk = 256
	for {
		var recs []Record
		var next []byte
		err := s.view(func(tx kv.Tx) error {
			c := tx.Bucket(bRecords).Cursor()
			for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, bucketKey(bucket, prefix)); k, v = c.Next() {
				if len(recs) == chunk {
					next = bytes.Clone(k)
					return nil
				}
				var st stored
				if err := transport.Unmarshal(v, &st); err != nil {
					return corrupt(k, err)
				}
				if !st.Deleted {
					_, key := splitKey(k)
					recs = append(recs, st.record(bucket, key))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		if next == nil {
			return nil
		}
		start = next
	}
}

// Watch subscribes to the changes of bucket under prefix.
func (s *Store) Watch(bucket, prefix string) (*Watch, error) {
	if _, ok := buckets[bucket]; !ok {
		return nil, CheckKey(bucket, "-")
	}
	return s.watch.add(bucket, prefix)
}

// ---- encoding helpers ----

func bucketKey(bucket, key string) []byte {
	b := make([]byte, 0, len(bucket)+1+len(key))
	b = append(b, bucket...)
	b = append(b, 0)
	return append(b, key...)
}

func splitKey(bk []byte) (string, string) {
	i := bytes.IndexByte(bk, 0)
	if i < 0 {
		return "", string(bk)
	}
	return string(bk[:i]), string(bk[i+1:])
}

func getStored(tx kv.Tx, bk []byte) (*stored, error) {
	v := tx.Bucket(bRecords).Get(bk)
	if v == nil {
		return nil, nil
	}
	var st stored
	if err := transport.Unmarshal(v, &st); err != nil {
		return nil, corrupt(bk, err)
	}
	return &st, nil
}

func putStored(tx kv.Tx, bk []byte, st *stored) error {
	v, err := transport.Marshal(st)
	if err != nil {
		return err
	}
	return tx.Bucket(bRecords).Put(bk, v)
}

func corrupt(bk []byte, err error) error {
	b, k := splitKey(bk)
	return fmt.Errorf("sync store: record %s/%q is corrupt: %w", b, k, err)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
