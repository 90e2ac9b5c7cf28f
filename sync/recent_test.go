package sync

import "testing"

func TestRecentChanges(t *testing.T) {
	rec := func(seq uint64, node string) Record {
		return Record{Bucket: BucketAppData, Key: "a/k", Value: []byte("v"), Version: Version{Wall: seq, Node: node}, Seq: seq}
	}
	var r recent
	if _, _, _, _, ok := r.read(0, ""); ok {
		t.Fatal("an empty ring served a read")
	}
	r.add([]Record{rec(5, "hub"), rec(6, "phone")})
	r.add([]Record{rec(7, "hub")})
	if _, _, _, _, ok := r.read(3, ""); ok {
		t.Error("served a read that starts before the ring")
	}
	if _, _, _, _, ok := r.read(8, ""); ok {
		t.Error("served a read past the ring's end (a commit not added yet)")
	}
	recs, upto, head, caught, ok := r.read(4, "phone")
	if !ok || !caught || upto != 7 || head != 7 || len(recs) != 2 || recs[0].Seq != 5 || recs[1].Seq != 7 {
		t.Errorf("read(4) = %v %d %d %v %v", recs, upto, head, caught, ok)
	}
	if recs, upto, _, caught, ok := r.read(7, ""); !ok || !caught || upto != 7 || len(recs) != 0 {
		t.Errorf("read(7) = %v %d %v %v", recs, upto, caught, ok)
	}
	// A gap (cannot happen) empties the ring rather than serve it.
	r.add([]Record{rec(9, "hub")})
	if _, _, _, _, ok := r.read(7, ""); ok {
		t.Error("served across a gap")
	}
	// Bounded: the oldest changes go, batches stop at the limit.
	r = recent{}
	for s := uint64(1); s <= recentMax+10; s++ {
		r.add([]Record{rec(s, "hub")})
	}
	if len(r.recs) != recentMax || r.recs[0].Seq != 11 {
		t.Fatalf("ring holds %d from %d", len(r.recs), r.recs[0].Seq)
	}
	recs, upto, _, caught, _ = r.read(10, "")
	if len(recs) != maxBatchRecords || caught || upto != 10+maxBatchRecords {
		t.Errorf("a long read: %d records up to %d, caught %v", len(recs), upto, caught)
	}
}
