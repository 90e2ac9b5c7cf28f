package cpace

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gtank/ristretto255"
)

func fuzzSeeds(f *testing.F) {
	seeds := [][]byte{
		nil,
		{},
		make([]byte, 32), // identity
		bytes.Repeat([]byte{0xff}, 32),
		unhex(f, "d6bac480f2c386c394efc7c47adb9925dcd2630b64f240c50f8d0eec482b9157"), // Ya, draft-21 B.3
		unhex(f, "3ea7e0b19560d7c0b0f5734f63b955286dfa8232b5ebe63324e2d9e7433f7258"), // Yb, draft-21 B.3
		unhex(f, "2b3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c"), // Y_i1
		unhex(f, "2c3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c"), // valid X
		make([]byte, 33),
	}
	for _, s := range seeds {
		f.Add(s, []byte("ADa"))
	}
}

// checkOutcome checks the contract for a received share m: either an error
// from the documented set with no outputs, or a valid, non-identity share
// and outputs of the documented sizes.
func checkOutcome(t *testing.T, m []byte, outs [][]byte, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrInvalidElement) && !errors.Is(err, ErrIdentityElement) {
			t.Fatalf("unexpected error %v", err)
		}
		for _, o := range outs {
			if o != nil {
				t.Fatalf("output %x returned with error %v", o, err)
			}
		}
		return
	}
	p := ristretto255.NewElement()
	if len(m) != ElementSize || p.Decode(m) != nil {
		t.Fatalf("accepted invalid share %x", m)
	}
	if p.Equal(ristretto255.NewElement()) == 1 {
		t.Fatalf("accepted identity share %x", m)
	}
	for _, o := range outs {
		if len(o) != ElementSize && len(o) != ISKSize {
			t.Fatalf("output of length %d", len(o))
		}
	}
}

// FuzzRespond feeds arbitrary initiator messages to the responder.
func FuzzRespond(f *testing.F) {
	fuzzSeeds(f)
	y := scalarFromHex(f, "d2316b454718c35362d83d69df6320f38578ed5984651435e2949762d900b80d")
	f.Fuzz(func(t *testing.T, ya, ada []byte) {
		yb, isk, err := respond([]byte("Password"), []byte("ci"), []byte("sid"), []byte("ADb"), ya, ada, y)
		checkOutcome(t, ya, [][]byte{yb, isk}, err)
		// The public API behaves the same on the same input.
		yb, isk, err2 := Respond([]byte("Password"), []byte("ci"), []byte("sid"), []byte("ADb"), ya, ada)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("respond/Respond disagree: %v vs %v", err, err2)
		}
		checkOutcome(t, ya, [][]byte{yb, isk}, err2)
	})
}

// FuzzFinish feeds arbitrary responder messages to the initiator.
func FuzzFinish(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, yb, adb []byte) {
		y := scalarFromHex(t, "da3d23700a9e5699258aef94dc060dfda5ebb61f02a5ea77fad53f4ff0976d08")
		ini, _ := start([]byte("Password"), []byte("ci"), []byte("sid"), []byte("ADa"), y)
		isk, err := ini.Finish(yb, adb)
		checkOutcome(t, yb, [][]byte{isk}, err)
	})
}
