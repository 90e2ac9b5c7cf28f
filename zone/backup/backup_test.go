package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

func source(name, content string) Source {
	return Source{Name: name, Size: int64(len(content)), WriteTo: func(w io.Writer) (int64, error) {
		n, err := io.WriteString(w, content)
		return int64(n), err
	}}
}

func write(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	h := Header{Zone: "home", ZoneID: "zid", Created: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC), Software: "test"}
	if err := Write(&b, h, []Source{source("pzh.db", "anchor bytes"), source("sync.db", "state"), source("mailbox.db", "")}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func read(data []byte) (*Header, map[string]string, error) {
	got := map[string]*bytes.Buffer{}
	h, err := Read(bytes.NewReader(data), func(name string, _ int64) (io.Writer, error) {
		if got[name] != nil {
			return nil, fmt.Errorf("%s twice", name)
		}
		got[name] = &bytes.Buffer{}
		return got[name], nil
	})
	files := map[string]string{}
	for k, v := range got {
		files[k] = v.String()
	}
	return h, files, err
}

func TestRoundTrip(t *testing.T) {
	h, files, err := read(write(t))
	if err != nil {
		t.Fatal(err)
	}
	if h.Zone != "home" || h.ZoneID != "zid" || h.Version != FormatVersion || fmt.Sprint(h.Files) != "[pzh.db sync.db mailbox.db]" {
		t.Fatalf("header %+v", h)
	}
	if fmt.Sprint(files) != "map[mailbox.db: pzh.db:anchor bytes sync.db:state]" {
		t.Fatalf("files %v", files)
	}
}

// Every byte flipped and every cut is refused, as damaged (or, in the
// magic, as not a backup; in the version, as unknown).
func TestDamageRefused(t *testing.T) {
	data := write(t)
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x01
		if _, _, err := read(bad); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		} else if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrForeign) && !errors.Is(err, ErrVersion) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := range len(data) {
		if _, _, err := read(data[:n]); err == nil {
			t.Fatalf("cut at %d: accepted", n)
		}
	}
	if _, _, err := read(append(bytes.Clone(data), 0)); !errors.Is(err, ErrDamaged) {
		t.Fatalf("a byte after the end: %v", err)
	}
	if _, _, err := read([]byte("# a shell script\n")); !errors.Is(err, ErrForeign) {
		t.Fatalf("a foreign file: %v", err)
	}
}
