package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

// Script commands for the zone state scripts: streams of edits racing a
// kill -9, checks that acknowledged edits survived it, and bulk records.

// Limits of the script commands, with why.
const (
	// scriptWait bounds every wait of these commands: far above what any
	// step takes under -race, so that only a hang fails on it.
	scriptWait = 60 * time.Second
	// editStreamCap stops a stream nobody stops: a device acknowledges
	// edits whatever happens to the hub, so its stream never fails.
	editStreamCap = 100000
)

// scriptSync is one script's state for these commands, in its
// testscript.Env Values, so that nothing outlives or crosses scripts.
type scriptSync struct {
	stream *editStream
}

type scriptSyncKey struct{}

func setupSyncCmds(env *testscript.Env) {
	env.Values[scriptSyncKey{}] = &scriptSync{}
}

func syncState(ts *testscript.TestScript) *scriptSync {
	return ts.Value(scriptSyncKey{}).(*scriptSync)
}

// daemonClient is a client of the daemon of kind pzh or pzp in dir.
func daemonClient(ts *testscript.TestScript, dir, kind string) *api.Client {
	var sock string
	switch kind {
	case "pzh":
		sock = api.HubSocketName
	case "pzp":
		sock = api.PeerSocketName
	default:
		ts.Fatalf("daemon kind %q: say pzh or pzp", kind)
	}
	return api.NewClient(api.SocketPath(ts.MkAbs(dir), sock))
}

// editStream writes PREFIX/0, PREFIX/1, … (each value its own key) one
// after the other, and keeps the keys whose PUT was answered 200.
type editStream struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	acked []string
	err   error         // why it ended
	moved chan struct{} // closed, and replaced, at each ack and at the end
}

func (s *editStream) run(ctx context.Context, c *api.Client, prefix string) {
	defer close(s.done)
	var err error
	for i := 0; i < editStreamCap && err == nil; i++ {
		key := fmt.Sprintf("%s/%d", prefix, i)
		if _, err = c.DataPut(ctx, zsync.BucketAppData, key, []byte(key)); err == nil {
			s.update(func() { s.acked = append(s.acked, key) })
		}
	}
	if err == nil {
		err = fmt.Errorf("reached the cap of %d edits", editStreamCap)
	}
	s.update(func() { s.err = err })
}

func (s *editStream) update(f func()) {
	s.mu.Lock()
	f()
	close(s.moved)
	s.moved = make(chan struct{})
	s.mu.Unlock()
}

func (s *editStream) snapshot() (n int, moved <-chan struct{}, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked), s.moved, s.err
}

// stop ends the stream and returns the acknowledged keys.
func (s *editStream) stop() ([]string, error) {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked, s.err
}

// editstream start DIR pzh|pzp PREFIX: start writing PREFIX/0, PREFIX/1, …
// through the daemon in DIR, one edit at a time, until an edit fails.
// editstream wait [+]K: wait until K edits (K more) are acknowledged.
// editstream stop FILE: stop, and write the acknowledged keys to FILE.
func cmdEditStream(ts *testscript.TestScript, neg bool, args []string) {
	st := syncState(ts)
	if neg || len(args) == 0 {
		ts.Fatalf("usage: editstream start DIR pzh|pzp PREFIX | wait [+]K | stop FILE")
	}
	switch {
	case args[0] == "start" && len(args) == 4:
		if st.stream != nil {
			ts.Fatalf("editstream: a stream is already running; stop it first")
		}
		c := daemonClient(ts, args[1], args[2])
		ctx, cancel := context.WithCancel(context.Background())
		s := &editStream{cancel: cancel, done: make(chan struct{}), moved: make(chan struct{})}
		st.stream = s
		go s.run(ctx, c, args[3])
		// A script that fails before stop must not leave it running.
		ts.Defer(func() { s.stop() })
	case args[0] == "wait" && len(args) == 2:
		s := st.stream
		if s == nil {
			ts.Fatalf("editstream wait: no stream running")
		}
		k, err := strconv.Atoi(strings.TrimPrefix(args[1], "+"))
		ts.Check(err)
		n, _, _ := s.snapshot()
		if strings.HasPrefix(args[1], "+") {
			k += n
		}
		timeout := time.NewTimer(scriptWait)
		defer timeout.Stop()
		for {
			n, moved, err := s.snapshot()
			switch {
			case n >= k:
				ts.Logf("editstream: %d edits acknowledged", n)
				return
			case err != nil:
				ts.Fatalf("editstream: ended after %d of %d edits: %v", n, k, err)
			}
			select {
			case <-moved:
			case <-timeout.C:
				ts.Fatalf("editstream: only %d of %d edits acknowledged after %v", n, k, scriptWait)
			}
		}
	case args[0] == "stop" && len(args) == 2:
		s := st.stream
		if s == nil {
			ts.Fatalf("editstream stop: no stream running")
		}
		st.stream = nil
		keys, err := s.stop()
		ts.Logf("editstream: %d edits acknowledged; the stream ended with: %v", len(keys), err)
		if len(keys) == 0 {
			ts.Fatalf("editstream: no edit was acknowledged")
		}
		ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(strings.Join(keys, "\n")+"\n"), 0o600))
	default:
		ts.Fatalf("usage: editstream start DIR pzh|pzp PREFIX | wait [+]K | stop FILE")
	}
}

// checkkeys DIR pzh|pzp FILE: every key in FILE (one a line, in appdata)
// holds its own name as value on the daemon in DIR.
func cmdCheckKeys(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: checkkeys DIR pzh|pzp FILE")
	}
	c := daemonClient(ts, args[0], args[1])
	ctx, cancel := context.WithTimeout(context.Background(), scriptWait)
	defer cancel()
	var bad []string
	n := 0
	for key := range strings.FieldsSeq(ts.ReadFile(args[2])) {
		n++
		v, err := c.DataGet(ctx, zsync.BucketAppData, key)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s: %v", key, err))
		case v.Text == nil || *v.Text != key:
			bad = append(bad, fmt.Sprintf("%s: value %q", key, v.Value))
		}
	}
	if len(bad) > 0 {
		ts.Fatalf("checkkeys: %d of %d keys wrong on %s, first: %s", len(bad), n, args[0], strings.Join(bad[:min(len(bad), 5)], "; "))
	}
	fmt.Fprintf(ts.Stdout(), "all %d keys present\n", n)
}

// genrecords N FILE: write N records bulk/000000 … as import lines.
func cmdGenRecords(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: genrecords N FILE")
	}
	n, err := strconv.Atoi(args[0])
	ts.Check(err)
	f, err := os.Create(ts.MkAbs(args[1]))
	ts.Check(err)
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for i := range n {
		// A value of some fifty bytes, about what an application keeps.
		text := fmt.Sprintf("record %d of %d, with a little padding.....", i, n)
		ts.Check(enc.Encode(api.ImportLine{Key: fmt.Sprintf("bulk/%06d", i), Text: &text}))
	}
	ts.Check(w.Flush())
	ts.Check(f.Close())
}

// waitseq DIR MIN: long-poll the status of pzp run in DIR until it has
// applied the hub's changes up to sequence MIN, and print where it is.
func cmdWaitSeq(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitseq DIR MIN")
	}
	want, err := strconv.ParseUint(args[1], 10, 64)
	ts.Check(err)
	st := waitPeerStatus(ts, args[0], "waitseq", func(st *api.PeerStatus) bool { return st.Sync != nil && st.Sync.LastSeq >= want })
	sy := st.Sync
	fmt.Fprintf(ts.Stdout(), "sync %s: applied up to %d of %d, %d records received\n", sy.Phase, sy.LastSeq, sy.HubSeq, sy.Received)
}

// waitPeerStatus long-polls the status of the pzp in dir until cond
// holds, for at most scriptWait, and returns it.
func waitPeerStatus(ts *testscript.TestScript, dir, what string, cond func(*api.PeerStatus) bool) *api.PeerStatus {
	c := daemonClient(ts, dir, "pzp")
	ctx, cancel := context.WithTimeout(context.Background(), scriptWait)
	defer cancel()
	path := "/v1/status"
	for {
		var st api.PeerStatus
		if err := c.Do(ctx, http.MethodGet, path, nil, &st); err != nil {
			ts.Fatalf("%s: %v", what, err)
		}
		if cond(&st) {
			return &st
		}
		if ctx.Err() != nil {
			ts.Fatalf("%s: no match after %v: state %s, sync %+v, wake %+v", what, scriptWait, st.State, st.Sync, st.Wake)
		}
		path = fmt.Sprintf("/v1/status?wait=%d&timeout=10s", st.Version)
	}
}

// lines FILE N: FILE (or stdout) has exactly N lines.
func cmdLines(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: lines FILE N")
	}
	want, err := strconv.Atoi(args[1])
	ts.Check(err)
	got := strings.Count(ts.ReadFile(args[0]), "\n")
	switch {
	case neg && got == want:
		ts.Fatalf("%s has %d lines", args[0], got)
	case !neg && got != want:
		ts.Fatalf("%s has %d lines, want %d", args[0], got, want)
	}
}
