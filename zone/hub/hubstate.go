package hub

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/pzone/pzone/zone/session"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// The zone state that package sync replicates, as the zone runtime uses
// it: the sync stream of each session, and the certificates bucket, which
// the hub keeps in step with its own records of devices.

// compactEvery is how often the hub compacts deletions every device has
// seen: tombstones cost a few dozen bytes each, so hourly is plenty.
const compactEvery = time.Hour

// handleSync serves a device's sync stream for the life of its session.
func (s *hubSession) handleSync(st transport.Stream) {
	if !s.syncing.CompareAndSwap(false, true) {
		s.h.log.Info("second sync stream refused", "device", s.device)
		st.Reset()
		return
	}
	st.SetDeadline(time.Time{})
	// The stream also fails when the session ends.
	err := s.h.state.Serve(s.syncCtx, s.device, session.SyncStream{Stream: st})
	if err != nil && !wentAway(s.conn, err) {
		s.h.log.Info("sync stream failed", "device", s.device, "err", err)
		if errors.Is(err, zsync.ErrProtocol) {
			go s.close(wire.ReasonProtocol, err.Error())
		}
	}
}

// putCert records a certificate-bucket entry (see putState).
func (h *Hub) putCert(key string, value []byte) { h.putState(zsync.BucketCerts, key, value) }

// putState records a hub-kept entry unless it already holds that value, so
// that restarts do not rewrite what devices have.
func (h *Hub) putState(bucket, key string, value []byte) {
	if cur, ok, err := h.state.Get(bucket, key); err == nil && ok && !cur.Deleted && bytes.Equal(cur.Value, value) {
		return
	}
	if _, err := h.state.Put(bucket, key, value); err != nil {
		h.log.Warn("publish zone record; tried again later", "bucket", bucket, "key", key, "err", err)
		h.publishFails.Add(1)
		h.republishLater()
	}
}

// republishLater brings the zone state in step with the hub's records
// again (reconcileState) after a publication failed (a full disk, say),
// retrying with backoff until a pass goes through: devices see what the
// hub decided once the disk has room, without a restart.
func (h *Hub) republishLater() {
	select {
	case <-h.stopping:
		return // the hub is going: it reconciles at its next start
	default:
	}
	if !h.republishing.CompareAndSwap(false, true) {
		return // one retry loop at a time
	}
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		for wait := time.Second; ; wait = min(2*wait, time.Minute) {
			select {
			case <-h.stopping:
				h.republishing.Store(false)
				return
			case <-time.After(wait):
			}
			if !h.reconcileState() {
				continue
			}
			h.log.Info("zone records published again")
			done := h.publishFails.Load()
			h.republishing.Store(false)
			// A failure that came after the pass began lost its claim to
			// the loop: start it again.
			if h.publishFails.Load() != done {
				h.republishLater()
			}
			return
		}
	}()
}

// stop closes stopping, once: held calls give up and the republishing
// loop ends.
func (h *Hub) stop() { h.stopOnce.Do(func() { close(h.stopping) }) }

// publishRevocation puts every serial of a revoked device in the
// certificates bucket and withdraws its current certificate, in one
// change set, so no device sees one without the other.
func (h *Hub) publishRevocation(rec *DeviceRecord) bool {
	at := rec.RevokedAt
	if at.IsZero() {
		at = h.cfg.Now().UTC()
	}
	var edits []zsync.Edit
	for _, serial := range rec.Serials {
		if _, ok, _ := h.state.Get(zsync.BucketCerts, wire.CertKeyRevokedPrefix+serial); ok {
			continue
		}
		rv := Revocation{Device: rec.Name, At: at, Reason: rec.RevokeReason}
		sig, err := signRevocation(h.ca, serial, &rv)
		if err != nil {
			h.log.Warn("sign revocation", "err", err)
			return false
		}
		rv.Sig = sig
		v, err := transport.Marshal(&rv)
		if err != nil {
			h.log.Warn("encode revocation", "err", err)
			return false
		}
		edits = append(edits, zsync.Edit{Bucket: zsync.BucketCerts, Key: wire.CertKeyRevokedPrefix + serial, Value: v})
	}
	if _, ok, _ := h.state.Get(zsync.BucketCerts, wire.CertKeyDevice+rec.Name); ok || len(edits) > 0 {
		edits = append(edits, zsync.Edit{Bucket: zsync.BucketCerts, Key: wire.CertKeyDevice + rec.Name, Delete: true})
	}
	if len(edits) == 0 {
		return true
	}
	if _, err := h.state.Apply(edits); err != nil {
		h.log.Warn("publish revocation; tried again later", "device", rec.Name, "err", err)
		h.publishFails.Add(1)
		h.republishLater()
		return false
	}
	return true
}

// reconcileState brings what the hub keeps in the zone state (the zone's
// identity, the certificates bucket, the friends) in step with its own
// records: at start, as an earlier run may have stopped between the two,
// and after a publication failed. It reports whether every record went
// through.
func (h *Hub) reconcileState() bool {
	h.publishMu.Lock()
	defer h.publishMu.Unlock()
	before := h.publishFails.Load()
	h.publishZone()
	h.putCert(wire.CertKeyCA, h.ca.Cert.Raw)
	h.putCert(wire.CertKeyHub, h.cert.Load().Leaf.Raw)
	for _, d := range h.reg.records() {
		switch {
		case d.Revoked:
			h.publishRevocation(d)
		case d.Cert != nil:
			h.putCert(wire.CertKeyDevice+d.Name, d.Cert)
		}
	}
	for _, f := range h.friends.records() {
		h.friends.publish(f)
	}
	h.friends.withdrawStale()
	return h.publishFails.Load() == before
}

func (h *Hub) compactLoop(ctx context.Context) error {
	compact := func() {
		n, err := h.state.Compact(h.reg.active())
		if err != nil {
			h.log.Warn("compact zone state", "err", err)
		} else if n > 0 {
			h.log.Info("compacted zone state", "tombstones", n)
		}
	}
	compact()
	return every(ctx, compactEvery, compact)
}
