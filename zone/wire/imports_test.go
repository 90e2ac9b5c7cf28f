package wire

import (
	"os/exec"
	"strings"
	"testing"
)

// module is this repository's module path.
const module = "github.com/pzone/pzone"

// layers orders the module's packages, lowest first. A package may import
// only packages of lower layers: never one beside it or above it. Every
// package must be listed, so a new one is placed on purpose.
var layers = [][]string{
	// Building blocks that know nothing of zones' daemons: the stores'
	// key-value model first, then its backends and the rest.
	{"storefile/kv"},
	{"certs", "pairing/cpace", "storefile", "storefile/kv/kvtest", "storefile/pgkv", "storefile/pgkv/pgtest", "transport", "wakeup"},
	{"pairing", "sync"},
	// What the hub and the devices share: the vocabulary they speak, and
	// the pure logic over it.
	{"zone/wire"},
	{"zone/appid", "zone/envelope", "zone/policy", "zone/token"},
	// The local API as its clients see it (types and the Go client), and
	// the pieces of sessions and stores both runtimes use.
	{"zone/api", "zone/backup", "zone/session", "zone/stores"},
	// The local API's serving side and the management plane's accounts
	// and sessions; services hosted on a node and the hub's web listener.
	{"zone/localapi", "zone/metrics", "zone/mgmt"},
	{"zone/services", "zone/web"},
	// The runtimes, one per role: beside each other, so neither may
	// import the other.
	{"zone/hub", "zone/peer"},
	// Many zones' hubs in one process, on one listener.
	{"zone/provider"},
	// Their users.
	{"cmd/internal/cli", "bench"},
	{"cmd/pzh", "cmd/pzp", "cmd/pzbench", "cmd/internal/mangen"},
}

// TestImportLayers pins the import order (docs/ARCHITECTURE.md), so that
// it cannot regress unnoticed: go list reports each package's imports.
func TestImportLayers(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH: cannot list the packages' imports")
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	layer := map[string]int{}
	for i, l := range layers {
		for _, p := range l {
			layer[p] = i
		}
	}
	seen := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module+"/")
		seen[pkg] = true
		at, ok := layer[pkg]
		if !ok {
			t.Errorf("package %s is in no layer: add it to layers in zone/wire/imports_test.go (and docs/ARCHITECTURE.md)", pkg)
			continue
		}
		for _, imp := range f[1:] {
			dep, ours := strings.CutPrefix(imp, module+"/")
			if !ours {
				continue
			}
			if l, ok := layer[dep]; ok && l >= at {
				t.Errorf("%s (layer %d) imports %s (layer %d): a package may import only lower layers", pkg, at, dep, l)
			}
		}
	}
	for p := range layer {
		if !seen[p] {
			t.Errorf("layers lists %s, which go list does not know", p)
		}
	}
}
