package hub

import (
	"testing"
	"time"
)

func TestCallRate(t *testing.T) {
	if ok, _ := (*callRate)(nil).admit("z"); !ok {
		t.Fatal("no limit refused a call")
	}
	now := time.Unix(1000, 0)
	c := newCallRate(10, func() time.Time { return now })
	for i := range 10 {
		if ok, why := c.admit("z"); !ok {
			t.Fatalf("call %d of the first second's burst refused: %s", i, why)
		}
	}
	if ok, why := c.admit("z"); ok || why == "" {
		t.Fatal("the 11th call in a second passed")
	}
	now = now.Add(100 * time.Millisecond) // one token back
	if ok, _ := c.admit("z"); !ok {
		t.Fatal("a token that came back was refused")
	}
	if ok, _ := c.admit("z"); ok {
		t.Fatal("more than the tokens that came back passed")
	}
	now = now.Add(time.Hour) // never more than a second's worth
	n := 0
	for {
		if ok, _ := c.admit("z"); !ok {
			break
		}
		n++
	}
	if n != 10 {
		t.Fatalf("after an idle hour %d calls passed, want the burst of 10", n)
	}
}
