package localapi

import (
	"context"
	"testing"
)

func TestNotifierWakesWaiters(t *testing.T) {
	var n Notifier
	v0 := n.Wait(context.Background(), ^uint64(0))
	got := make(chan uint64)
	go func() { got <- n.Wait(context.Background(), v0) }()
	n.Bump()
	if v := <-got; v == v0 {
		t.Fatalf("waiter woke with the old version %d", v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if v := n.Wait(ctx, n.Wait(context.Background(), ^uint64(0))); v != v0+1 {
		t.Fatalf("cancelled wait returned %d", v)
	}
}
