package localapi

import (
	"errors"
	"strings"
	"testing"

	zsync "github.com/pzone/pzone/sync"
)

func TestParseImportLine(t *testing.T) {
	big := `{"key":"a/k","text":"` + strings.Repeat("x", zsync.MaxValue+1) + `"}`
	for _, tc := range []struct {
		line, node string
		want       zsync.Edit
		err        error
	}{
		{`{"key":"notes/a","text":"hi"}`, "phone", zsync.Edit{Bucket: "appdata", Key: "notes/a", Value: []byte("hi")}, nil},
		{`{"key":"notes/a","value":"aGk="}`, "phone", zsync.Edit{Bucket: "appdata", Key: "notes/a", Value: []byte("hi")}, nil},
		{`{"key":"notes/a","value":"aGk=","text":"hi","seq":3}`, "phone", zsync.Edit{Bucket: "appdata", Key: "notes/a", Value: []byte("hi")}, nil},
		{`{"key":"notes/a","deleted":true}`, "phone", zsync.Edit{Bucket: "appdata", Key: "notes/a", Delete: true}, nil},
		{`{"bucket":"userdata","key":"x","text":""}`, "phone", zsync.Edit{Bucket: "userdata", Key: "x", Value: []byte{}}, nil},
		{`{"bucket":"policy","key":"r","text":"x"}`, "hub", zsync.Edit{Bucket: "policy", Key: "r", Value: []byte("x")}, nil},
		{`{"bucket":"policy","key":"r","text":"x"}`, "phone", zsync.Edit{}, zsync.ErrPermission},
		{`{"bucket":"certs","key":"ca","text":"x"}`, "hub", zsync.Edit{}, zsync.ErrPermission},
		{`{"key":"notes/a","value":"aGk=","text":"ho"}`, "phone", zsync.Edit{}, zsync.ErrInvalid},
		{`{"key":"notes/a","deleted":true,"text":"x"}`, "phone", zsync.Edit{}, zsync.ErrInvalid},
		{`{"key":"notes/a"}`, "phone", zsync.Edit{}, zsync.ErrInvalid},
		{`{"key":"noapp","text":"x"}`, "phone", zsync.Edit{}, zsync.ErrInvalid},
		{`{"bucket":"nope","key":"k","text":"x"}`, "phone", zsync.Edit{}, zsync.ErrInvalid},
		{`not json`, "phone", zsync.Edit{}, zsync.ErrInvalid},
		{big, "phone", zsync.Edit{}, zsync.ErrInvalid},
	} {
		got, err := ParseImportLine([]byte(tc.line), zsync.BucketAppData, tc.node)
		name := tc.line
		if len(name) > 60 {
			name = name[:60]
		}
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s as %s: error %v, want %v", name, tc.node, err, tc.err)
			}
			continue
		}
		if err != nil || got.Bucket != tc.want.Bucket || got.Key != tc.want.Key || string(got.Value) != string(tc.want.Value) || got.Delete != tc.want.Delete {
			t.Errorf("%s as %s: %+v, %v; want %+v", name, tc.node, got, err, tc.want)
		}
	}
}

// FuzzParseImportLine: any line is an edit the node may make, or an
// ErrInvalid / ErrPermission error; never a panic.
func FuzzParseImportLine(f *testing.F) {
	for _, s := range []string{`{"key":"a/b","text":"x"}`, `{"key":"a/b","value":"eA=="}`, `{"bucket":"devices","key":"phone","deleted":true}`, `{}`, `[`, `{"key":"a/b","text":"x","value":"eQ=="}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := ParseImportLine(line, zsync.BucketAppData, "phone")
		if err != nil {
			if !errors.Is(err, zsync.ErrInvalid) && !errors.Is(err, zsync.ErrPermission) {
				t.Fatalf("error of another kind: %v", err)
			}
			return
		}
		if werr := CheckAPIWrite("phone", e.Bucket, e.Key); werr != nil {
			t.Fatalf("accepted an edit the device may not make: %+v: %v", e, werr)
		}
		if len(e.Value) > zsync.MaxValue || e.Delete && len(e.Value) > 0 {
			t.Fatalf("accepted a bad edit: %+v", e)
		}
	})
}
