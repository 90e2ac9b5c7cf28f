package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	b := &progressBar{w: &buf, label: "receiving zone state", on: true}
	b.update(0, 200, 0)
	b.update(50, 200, 40) // within progressEvery of the last draw: skipped
	b.update(200, 200, 190)
	b.finish()
	out := buf.String()
	if want := "\rreceiving zone state [" + strings.Repeat(".", 30) + "]   0%  0 records"; !strings.HasPrefix(out, want) {
		t.Errorf("first draw %q, want prefix %q", out, want)
	}
	if strings.Contains(out, " 25%") {
		t.Errorf("redrew within the rate limit: %q", out)
	}
	if want := "\rreceiving zone state [" + strings.Repeat("#", 30) + "] 100%  190 records\n"; !strings.HasSuffix(out, want) {
		t.Errorf("last draw %q, want suffix %q", out, want)
	}

	// Not a terminal: nothing at all.
	buf.Reset()
	b = newProgressBar(&buf, "x")
	b.update(1, 2, 1)
	b.finish()
	if buf.Len() != 0 {
		t.Errorf("drew on a non-terminal: %q", buf.String())
	}
}
