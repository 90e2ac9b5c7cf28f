package sync

import "io"

// The sync stream protocol (docs/PROTOCOL.md, "Synchronisation"). A device
// opens one sync stream per session and says Hello with where it stands;
// the hub answers Start, then sends Changes until the session ends: first
// the backlog in sequence order, then each new change as it is accepted.
// The device pushes its local edits in Push frames, the hub answers each
// with a PushResult, and the device confirms what it has durably applied
// with Ack. Every frame is one Msg (uvarint length + CBOR).

// ProtocolVersion is the sync protocol version carried in Hello.
// History: 1 — first.
const ProtocolVersion = 1

// MsgType says what a sync frame is.
type MsgType uint8

const (
	MsgHello      MsgType = 1 // device → hub: Version, Epoch, Since
	MsgStart      MsgType = 2 // hub → device: Epoch, Reset, Head
	MsgChanges    MsgType = 3 // hub → device: Records, Upto, Head, CaughtUp
	MsgPush       MsgType = 4 // device → hub: ID, Records (local edits)
	MsgPushResult MsgType = 5 // hub → device: ID, Results (one per pushed record, same order)
	MsgAck        MsgType = 6 // device → hub: Seq, everything up to it is durably applied
)

// Msg is one frame of the sync stream. Which fields are set depends on
// Type; unknown fields are ignored so later versions can add some.
type Msg struct {
	Type    MsgType `cbor:"1,keyasint"`
	Version uint    `cbor:"2,keyasint,omitempty"`
	// Epoch identifies the hub's store: a device that synced with another
	// (a hub rebuilt from scratch) must start over.
	Epoch string `cbor:"3,keyasint,omitempty"`
	// Since is the last sequence number the device applied.
	Since uint64 `cbor:"4,keyasint,omitempty"`
	// Reset tells the device its state cannot be brought up to date by
	// changes alone (another epoch, or deletions it missed were compacted):
	// the hub sends everything from 0, and the device drops whatever the
	// full pass does not confirm, keeping its own pending edits.
	Reset bool `cbor:"5,keyasint,omitempty"`
	// Head is the hub's last sequence number when the frame was made.
	Head    uint64   `cbor:"6,keyasint,omitempty"`
	Records []Record `cbor:"7,keyasint,omitempty"`
	// Upto: with these records the device has every change up to Upto.
	Upto uint64 `cbor:"8,keyasint,omitempty"`
	// CaughtUp: Upto is the hub's head; the backlog is done.
	CaughtUp bool         `cbor:"9,keyasint,omitempty"`
	ID       uint64       `cbor:"10,keyasint,omitempty"`
	Results  []PushResult `cbor:"11,keyasint,omitempty"`
	Seq      uint64       `cbor:"12,keyasint,omitempty"`
	// Full, in Hello: the device is in the middle of a full resync, so it
	// needs its own changes too (otherwise the hub leaves them out).
	Full bool `cbor:"13,keyasint,omitempty"`
	// EpochProof, in Start: the zone's signed statement that Epoch is its
	// zone state (opaque here; the zone runtime makes and checks it). A
	// device that synced with another epoch gives up its copy only for a
	// proof it accepts.
	EpochProof []byte `cbor:"14,keyasint,omitempty"`
	// Restored, in Start with Reset: the hub's zone state came back from
	// a backup older than what the device holds (restore.go). The device
	// keeps what the full pass does not confirm, of its own edits and of
	// the records Witness picks, and pushes them back, instead of
	// dropping them.
	Restored bool `cbor:"15,keyasint,omitempty"`
}

// PushStatus is the hub's verdict on one pushed edit.
type PushStatus uint8

const (
	// PushAccepted: the edit is the key's latest; Seq is its number.
	PushAccepted PushStatus = 1
	// PushSuperseded: the hub holds a newer version (Current, left out
	// when the answer would not fit in a frame: the device then gets it
	// with the changes); the edit lost the conflict, as it would have on
	// every node.
	PushSuperseded PushStatus = 2
	// PushRefused: the device may not make this edit (Reason); Current is
	// the hub's record of the key, absent if it has none.
	PushRefused PushStatus = 3
	// PushDeferred: not decided, so that the answer fits in a frame; the
	// device pushes the edit again.
	PushDeferred PushStatus = 4
)

// PushResult answers one pushed record.
type PushResult struct {
	Status  PushStatus `cbor:"1,keyasint"`
	Seq     uint64     `cbor:"2,keyasint,omitempty"`
	Reason  string     `cbor:"3,keyasint,omitempty"`
	Current *Record    `cbor:"4,keyasint,omitempty"`
}

// Batching, with why.
const (
	// maxBatchRecords bounds the records of one Changes or Push frame;
	// with maxBatchBytes it bounds what either side holds in memory for
	// one frame, whatever the size of the state.
	maxBatchRecords = 1024
	// readAhead is how many messages a device reads ahead of the one it
	// applies, and maxApplyRecords the most records it commits at once
	// from those it has: a catch-up commits in fewer, larger transactions
	// than it is sent in, holding a few batches more in memory.
	readAhead       = 4
	maxApplyRecords = 8 * maxBatchRecords
	// maxBatchBytes keeps a batch well inside one frame
	// (transport.MaxFrameSize, 1 MiB) even with a record of MaxValue.
	maxBatchBytes = 512 << 10
	// maxFrame is the largest sync frame accepted.
	maxFrame = 1 << 20
	// maxPushesInFlight bounds the pushes a device sends before hearing
	// back, so a device with many offline edits does not queue them all
	// in the hub's receive buffers.
	maxPushesInFlight = 4
)

// Stream is what the sync protocol runs over: one stream of a session.
// Close must end it in both directions (unblocking a pending Read).
type Stream interface {
	io.Reader
	io.Writer
	Close() error
}
