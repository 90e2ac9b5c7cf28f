package peer

import (
	"context"
	"testing"
)

// TestNoSleeper: a device that never sleeps has no sleeper, and every
// question to it has the answer of a device that is awake.
func TestNoSleeper(t *testing.T) {
	var sl *sleeper
	sl.need()
	sl.woke()
	if sl.isAsleep() || sl.away() || sl.wakeStatus() != nil || sl.awaitSession(context.Background()) != nil {
		t.Fatal("a device that never sleeps looks asleep or away")
	}
	if err := sl.registerWake(nil); err != nil {
		t.Fatal(err)
	}
}
