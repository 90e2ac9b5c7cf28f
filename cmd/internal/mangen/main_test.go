package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWrite: a page for each command of both trees, each with its own
// title and the command's description.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	if err := write(dir); err != nil {
		t.Fatal(err)
	}
	for page, want := range map[string]string{
		"pzh.1":                 "pzh runs the hub of a personal zone",
		"pzp.1":                 "pzp runs on each device",
		"pzh-policy-add.1":      "add writes a rule",
		"pzh-serve.1":           "--web",
		"pzp-pair.1":            `.TH "PZP-PAIR" "1"`,
		"pzh-completion-bash.1": "bash",
	} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Fatalf("page %s: %v", page, err)
		}
		if !strings.Contains(string(b), want) || !strings.HasPrefix(string(b), ".nh") && !strings.Contains(string(b), ".TH") {
			t.Errorf("page %s lacks %q:\n%.400s", page, want, b)
		}
	}
}
