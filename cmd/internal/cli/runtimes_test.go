package cli

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// reachRuntimes are the commands that may use a runtime's package: those
// that run one (serve, run), make its files (init, pair, restore), or work on its
// files while it is stopped (compact; pzh provider init and serve; status and unpair of a device whose
// pzp is not running). Everything else talks to a running daemon through
// zone/api only.
var reachRuntimes = []string{"pzh_compact.go", "pzh_init.go", "pzh_provider.go", "pzh_restore.go", "pzh_serve.go", "pzp_compact.go", "pzp_pair.go", "pzp_run.go", "pzp_status.go", "pzp_unpair.go"}

// TestOnlySomeCommandsReachTheRuntimes pins that list (docs/ARCHITECTURE.md).
func TestOnlySomeCommandsReachTheRuntimes(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if (path == "github.com/pzone/pzone/zone/hub" || path == "github.com/pzone/pzone/zone/peer" || path == "github.com/pzone/pzone/zone/provider") && !slices.Contains(reachRuntimes, f) {
				t.Errorf("%s imports %s: talk to the daemon through zone/api, or add the command to reachRuntimes with why", f, path)
			}
		}
	}
}
