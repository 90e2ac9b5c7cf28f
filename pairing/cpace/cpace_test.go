package cpace

import (
	"bytes"
	"errors"
	"sync"
	"testing"
)

type params struct {
	prs, ci, sid, ada, adb []byte
}

func base() params {
	return params{
		prs: []byte("correct horse battery staple"),
		ci:  []byte("\x0bA_initiator\x0bB_responder"),
		sid: []byte("0123456789abcdef"),
		ada: []byte("ADa"),
		adb: []byte("ADb"),
	}
}

// run performs one full exchange; pa are A's inputs, pb are B's.
func run(t *testing.T, pa, pb params) (iskA, iskB []byte) {
	t.Helper()
	ini, ya, err := Start(pa.prs, pa.ci, pa.sid, pa.ada)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if len(ya) != ElementSize {
		t.Fatalf("len(Ya) = %d", len(ya))
	}
	yb, iskB, err := Respond(pb.prs, pb.ci, pb.sid, pb.adb, ya, pb.ada)
	if err != nil {
		t.Fatalf("Respond: %v", err)
	}
	if len(yb) != ElementSize || len(iskB) != ISKSize {
		t.Fatalf("len(Yb) = %d, len(ISK) = %d", len(yb), len(iskB))
	}
	iskA, err = ini.Finish(yb, pa.adb)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	return iskA, iskB
}

func TestAgree(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		p := base()
		iskA, iskB := run(t, p, p)
		if !bytes.Equal(iskA, iskB) {
			t.Fatalf("run %d: ISKs differ", i)
		}
		if seen[string(iskA)] {
			t.Fatalf("run %d: ISK repeated across runs", i)
		}
		seen[string(iskA)] = true
	}
}

func TestAgreeEmptyOptionalInputs(t *testing.T) {
	p := params{prs: []byte("pw")}
	iskA, iskB := run(t, p, p)
	if !bytes.Equal(iskA, iskB) {
		t.Fatal("ISKs differ with empty CI, sid and AD")
	}
}

func TestAgreeLongPRS(t *testing.T) {
	// A PRS longer than the SHA-512 block: no zero padding.
	p := base()
	p.prs = bytes.Repeat([]byte("x"), 300)
	iskA, iskB := run(t, p, p)
	if !bytes.Equal(iskA, iskB) {
		t.Fatal("ISKs differ with long PRS")
	}
	if gs := generatorString([]byte(dsi), p.prs, p.ci, p.sid, hashBlockSize); len(gs) != len(lvCat([]byte(dsi), p.prs, nil, p.ci, p.sid)) {
		t.Fatal("long PRS: unexpected zero padding")
	}
}

func TestMismatchGivesDifferentISK(t *testing.T) {
	mutations := map[string]func(p *params){
		"prs": func(p *params) { p.prs = []byte("correct horse battery stapler") },
		"ci":  func(p *params) { p.ci = []byte("\x0bA_initiator\x0bC_responder") },
		"sid": func(p *params) { p.sid = []byte("0123456789abcdeF") },
		"ada": func(p *params) { p.ada = []byte("ADA") },
		"adb": func(p *params) { p.adb = []byte("ADB") },
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			pa, pb := base(), base()
			mutate(&pb)
			iskA, iskB := run(t, pa, pb)
			if bytes.Equal(iskA, iskB) {
				t.Fatalf("ISKs equal despite different %s", name)
			}
		})
	}
}

func TestFieldBoundaries(t *testing.T) {
	// Moving bytes between adjacent fields must change the key (lv_cat
	// is prefix-free).
	pa, pb := base(), base()
	pa.ada, pa.adb = []byte("AD"), []byte("aADb")
	pb.ada, pb.adb = []byte("ADa"), []byte("ADb")
	iskA, iskB := run(t, pa, pb)
	if bytes.Equal(iskA, iskB) {
		t.Fatal("ISKs equal with shifted AD boundary")
	}
}

func TestFinishOnce(t *testing.T) {
	p := base()
	ini, ya, err := Start(p.prs, p.ci, p.sid, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	yb, _, err := Respond(p.prs, p.ci, p.sid, p.adb, ya, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ini.Finish(yb, p.adb); err != nil {
		t.Fatal(err)
	}
	if isk, err := ini.Finish(yb, p.adb); !errors.Is(err, ErrFinished) || isk != nil {
		t.Fatalf("second Finish = %x, %v; want ErrFinished", isk, err)
	}
}

func TestFinishAfterAbort(t *testing.T) {
	p := base()
	ini, ya, err := Start(p.prs, p.ci, p.sid, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ini.Finish([]byte("short"), p.adb); !errors.Is(err, ErrInvalidElement) {
		t.Fatalf("Finish(bad) error = %v", err)
	}
	yb, _, err := Respond(p.prs, p.ci, p.sid, p.adb, ya, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ini.Finish(yb, p.adb); !errors.Is(err, ErrFinished) {
		t.Fatalf("Finish after abort error = %v; want ErrFinished", err)
	}
}

func TestFinishConcurrent(t *testing.T) {
	p := base()
	ini, ya, err := Start(p.prs, p.ci, p.sid, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	yb, iskB, err := Respond(p.prs, p.ci, p.sid, p.adb, ya, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			isk, err := ini.Finish(yb, p.adb)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
				if !bytes.Equal(isk, iskB) {
					t.Error("ISK mismatch")
				}
			} else if !errors.Is(err, ErrFinished) {
				t.Errorf("unexpected error %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d successful Finish calls, want 1", ok)
	}
}

func TestStartFresh(t *testing.T) {
	p := base()
	_, ya1, err := Start(p.prs, p.ci, p.sid, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	_, ya2, err := Start(p.prs, p.ci, p.sid, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ya1, ya2) {
		t.Fatal("two Start calls gave the same Ya")
	}
}

func TestEmptyPRS(t *testing.T) {
	if _, _, err := Start(nil, nil, nil, nil); !errors.Is(err, ErrEmptyPRS) {
		t.Errorf("Start error = %v", err)
	}
	p := base()
	_, ya, _ := Start(p.prs, p.ci, p.sid, p.ada)
	if _, _, err := Respond(nil, nil, nil, nil, ya, nil); !errors.Is(err, ErrEmptyPRS) {
		t.Errorf("Respond error = %v", err)
	}
}

func TestRejectMalformedShares(t *testing.T) {
	p := base()
	_, ya, err := Start(p.prs, p.ci, p.sid, p.ada)
	if err != nil {
		t.Fatal(err)
	}
	nonCanonical := bytes.Repeat([]byte{0xff}, 32)
	negative := append([]byte(nil), ya...)
	negative[0] ^= 1 // flips the sign bit of s: not a valid encoding
	bad := map[string][]byte{
		"nil":           nil,
		"short":         ya[:31],
		"long":          append(append([]byte(nil), ya...), 0),
		"non-canonical": nonCanonical,
		"odd s":         negative,
	}
	for name, m := range bad {
		if _, _, err := Respond(p.prs, p.ci, p.sid, p.adb, m, p.ada); !errors.Is(err, ErrInvalidElement) {
			t.Errorf("Respond(%s) error = %v", name, err)
		}
		ini, _, _ := Start(p.prs, p.ci, p.sid, p.ada)
		if _, err := ini.Finish(m, p.adb); !errors.Is(err, ErrInvalidElement) {
			t.Errorf("Finish(%s) error = %v", name, err)
		}
	}
}

func TestErrorsCarryNoSecrets(t *testing.T) {
	p := base()
	p.prs = []byte("s3cr3t-PRS")
	_, _, err := Respond(p.prs, p.ci, p.sid, p.adb, make([]byte, 32), p.ada)
	if err == nil || bytes.Contains([]byte(err.Error()), p.prs) {
		t.Fatalf("error %v", err)
	}
}

func TestSampleScalarRange(t *testing.T) {
	for i := 0; i < 100; i++ {
		s, err := sampleScalar()
		if err != nil {
			t.Fatal(err)
		}
		b := s.Encode(nil)
		if b[31]&0xf0 != 0 {
			t.Fatalf("scalar has bits above 251 set: %x", b)
		}
	}
}
