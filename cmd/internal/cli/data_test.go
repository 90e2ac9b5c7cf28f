package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

func TestReadValue(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "v")
	os.WriteFile(file, []byte("from file\n"), 0o600)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, zsync.MaxValue+1), 0o600)
	full := filepath.Join(dir, "full")
	os.WriteFile(full, make([]byte, zsync.MaxValue), 0o600)

	for _, tc := range []struct {
		args  []string
		stdin string
		want  string // the value, or with err, a part of the error
		err   bool
		usage bool
	}{
		{args: []string{"literal"}, want: "literal"},
		{args: []string{""}, want: ""},
		{args: []string{"a@b"}, want: "a@b"},
		{args: nil, stdin: "@from stdin", want: "@from stdin"},
		{args: []string{"-"}, stdin: "x\x00y", want: "x\x00y"},
		{args: []string{"@" + file}, want: "from file\n"},
		{args: []string{"@" + filepath.Join(dir, "nope")}, want: "no such file", err: true},
		{args: []string{"@"}, want: "give it on standard input", err: true, usage: true},
		{args: []string{"@" + big}, want: "262144-byte limit", err: true},
		{args: []string{"-"}, stdin: strings.Repeat("x", zsync.MaxValue+1), want: "standard input is over the 262144-byte limit", err: true},
	} {
		v, err := readValue(tc.args, strings.NewReader(tc.stdin))
		var ue usageError
		switch {
		case tc.err && (err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &ue) != tc.usage):
			t.Errorf("readValue(%q): %v, want an error with %q (usage %v)", tc.args, err, tc.want, tc.usage)
		case !tc.err && (err != nil || string(v) != tc.want):
			t.Errorf("readValue(%q) = %q, %v; want %q", tc.args, v, err, tc.want)
		}
	}
	if v, err := readValue([]string{"@" + full}, nil); err != nil || len(v) != zsync.MaxValue {
		t.Errorf("a value of exactly the limit: %d bytes, %v", len(v), err)
	}
}

func TestDataArgs(t *testing.T) {
	for _, tc := range []struct {
		bucket string
		args   []string
		key    string // for o.key(args[0]); "" when refused
		prefix string // for o.prefix(args); "!" when refused
	}{
		{"appdata", []string{"notes/today"}, "notes/today", "notes/today"},
		{"appdata", []string{"notes"}, "", "notes/"},
		{"appdata", []string{"notes/"}, "", "notes/"},
		{"appdata", []string{"Notes/x"}, "", "!"},
		{"appdata", nil, "", ""},
		{"devices", []string{"phone"}, "phone", "phone"},
		{"devices", []string{"ph"}, "ph", "ph"},
		{"nosuch", []string{"x"}, "", "!"},
	} {
		o := &dataOptions{bucket: tc.bucket}
		if len(tc.args) > 0 {
			key, err := o.key(tc.args[0])
			var ue usageError
			if key != tc.key || (err != nil) != (tc.key == "") || err != nil && !errors.As(err, &ue) {
				t.Errorf("--bucket %s key %q = %q, %v; want %q", tc.bucket, tc.args[0], key, err, tc.key)
			}
		}
		p, err := o.prefix(tc.args)
		if tc.prefix == "!" && err == nil || tc.prefix != "!" && (err != nil || p != tc.prefix) {
			t.Errorf("--bucket %s prefix %q = %q, %v; want %q", tc.bucket, tc.args, p, err, tc.prefix)
		}
	}
}

func TestShown(t *testing.T) {
	text := func(s string) api.RecordView { return api.NewRecordView(zsync.Record{Value: []byte(s)}) }
	for _, tc := range []struct {
		v    api.RecordView
		want string
	}{
		{text("hello, world"), "hello, world"},
		{text("héllo ☃"), "héllo ☃"},
		{text(""), ""},
		{text("two\nlines"), "<9 bytes>"},
		{text("tab\there"), "<8 bytes>"},
		{text("\xff\x00"), "<2 bytes>"},
	} {
		if got := shown(tc.v); got != tc.want {
			t.Errorf("shown(%q) = %q, want %q", tc.v.Value, got, tc.want)
		}
	}
}

// A streamed JSON array reads exactly as printJSON prints the slice.
func TestJSONArray(t *testing.T) {
	for _, vs := range [][]api.RecordView{nil, {{Key: "a/1"}}, {{Key: "a/1"}, {Key: "a/2", Deleted: true}}} {
		var got, want bytes.Buffer
		arr := &jsonArray{w: &got}
		for _, v := range vs {
			arr.add(v)
		}
		arr.close()
		if vs == nil {
			vs = []api.RecordView{}
		}
		printJSON(&want, vs)
		if got.String() != want.String() {
			t.Errorf("streamed:\n%s\nprintJSON:\n%s", got.String(), want.String())
		}
	}
}
