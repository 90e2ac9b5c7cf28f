package hub

import (
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestMailboxExpiry: expired messages are listed and removed, and the
// counts follow.
func TestMailboxExpiry(t *testing.T) {
	m, err := openMailbox(filepath.Join(t.TempDir(), MailboxDBName), true, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	now := time.Now()
	for i, ttl := range []time.Duration{time.Minute, time.Hour, time.Minute} {
		if _, err := m.Put("laptop", &queuedMsg{ID: strconv.Itoa(i), Service: "s", Body: []byte("xx"), Queued: now, Expires: now.Add(ttl)}); err != nil {
			t.Fatal(err)
		}
	}
	exp, err := m.Expired(now.Add(2 * time.Minute))
	if err != nil || len(exp["laptop"]) != 2 {
		t.Fatalf("expired: %v, %v", exp, err)
	}
	if err := m.Remove("laptop", exp["laptop"]...); err != nil {
		t.Fatal(err)
	}
	if st := m.Stat("laptop"); st.n != 1 || st.bytes != 2 {
		t.Fatalf("after expiry: %+v", st)
	}
	left, err := m.Next("laptop", 0, 10)
	if err != nil || len(left) != 1 || left[0].msg.ID != "1" {
		t.Fatalf("left: %+v, %v", left, err)
	}
	// The byte limit holds too.
	_, err = m.Put("laptop", &queuedMsg{ID: "big", Body: make([]byte, 1<<20)})
	if !errors.Is(err, errQueueFull) {
		t.Fatalf("a message past the byte limit: %v", err)
	}
}
