package wire

import (
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/transport"
)

func TestParseAddr(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Addr
		err  string
	}{
		{in: "laptop/echo", want: Addr{Device: "laptop", Service: "echo"}},
		{in: "bob/laptop/files", want: Addr{Zone: "bob", Device: "laptop", Service: "files"}},
		{in: "laptop", err: "want DEVICE/SERVICE"},
		{in: "a/b/c/d", err: "want DEVICE/SERVICE"},
		{in: "laptop/Echo", err: "invalid name"},
		{in: "/echo", err: "device"},
		{in: "laptop/", err: "invalid name"},
	} {
		got, err := ParseAddr(c.in)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseAddr(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
		case err != nil || got != c.want:
			t.Errorf("ParseAddr(%q) = %v, %v; want %v", c.in, got, err, c.want)
		case got.String() != c.in:
			t.Errorf("%v.String() = %q, want %q", got, got.String(), c.in)
		}
	}
}

func TestCheckCallHeader(t *testing.T) {
	ok := func() *CallHeader {
		return &CallHeader{ID: "c1", Kind: CallRequest, ToDevice: "laptop", ToService: "echo", Method: "echo", FromApp: "notes"}
	}
	if err := CheckCallHeader(ok()); err != nil {
		t.Fatalf("a good header: %v", err)
	}
	for name, bad := range map[string]func(*CallHeader){
		"kind":        func(h *CallHeader) { h.Kind = 9 },
		"no id":       func(h *CallHeader) { h.ID = "" },
		"long id":     func(h *CallHeader) { h.ID = strings.Repeat("x", 65) },
		"device":      func(h *CallHeader) { h.ToDevice = "Lap top" },
		"service":     func(h *CallHeader) { h.ToService = "" },
		"method":      func(h *CallHeader) { h.Method = "A" },
		"app":         func(h *CallHeader) { h.FromApp = "no/slash" },
		"zone":        func(h *CallHeader) { h.ToZone = "not a zone!" },
		"caller zone": func(h *CallHeader) { h.FromZoneID = "nope" },
		"ttl":         func(h *CallHeader) { h.TTLMs = uint64((MaxTTL + time.Hour) / time.Millisecond) },
	} {
		h := ok()
		bad(h)
		if err := CheckCallHeader(h); err == nil {
			t.Errorf("%s: a bad header passed: %+v", name, h)
		}
	}
}

func TestCallTimeout(t *testing.T) {
	for ms, want := range map[uint64]time.Duration{0: DefaultCallTimeout, 1500: 1500 * time.Millisecond, 1 << 40: MaxCallTimeout} {
		if got := CallTimeout(&CallHeader{TimeoutMs: ms}); got != want {
			t.Errorf("TimeoutMs %d: %v, want %v", ms, got, want)
		}
	}
}

// The wire keys of a call header are fixed (docs/PROTOCOL.md): a header
// written and read back is the same, and its encoding starts as a CBOR map.
func TestCallHeaderRoundTrip(t *testing.T) {
	h := CallHeader{ID: "c1", Kind: CallMessage, ToZone: "bob", ToDevice: "laptop", ToService: "inbox", TTLMs: 1000,
		Envelope: &Envelope{Cert: []byte{1}, TimeMs: 2, Sig: []byte{3}}}
	b, err := transport.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	var back CallHeader
	if err := transport.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.ID != h.ID || back.Kind != h.Kind || back.ToZone != h.ToZone || back.TTLMs != h.TTLMs || back.Envelope == nil || back.Envelope.TimeMs != 2 {
		t.Fatalf("read back %+v from %+v", back, h)
	}
	if b[0]>>5 != 5 {
		t.Fatalf("a call header is not a CBOR map: % x", b[:1])
	}
}

func TestCloseReasons(t *testing.T) {
	for r := ReasonNone; r <= ReasonUnfriended; r++ {
		if strings.HasPrefix(r.String(), "reason ") {
			t.Errorf("reason %d has no name", r)
		}
	}
	if !ReasonRevoked.Final() || ReasonTimeout.Final() || ReasonShutdown.Final() {
		t.Error("Final: revoked must stop a device, a timeout or shutdown must not")
	}
}
