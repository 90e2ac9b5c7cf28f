package cli

import (
	"fmt"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/pzone/pzone/storefile/pgkv/pgtest"
)

// pgstart [VAR]: start a PostgreSQL server of the script's own (a new
// cluster in a temp dir, on a Unix socket only) and set VAR (default
// PZH_STORE) to its connection string; it stops when the script ends.
// A script skips first without PostgreSQL's programs: [!postgres] skip.
func cmdPGStart(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 {
		ts.Fatalf("usage: pgstart [VAR]")
	}
	name := storeEnv
	if len(args) == 1 {
		name = args[0]
	}
	s, err := pgtest.New()
	ts.Check(err)
	ts.Defer(s.Stop)
	ts.Setenv(name, s.URL)
	ts.Setenv("PGDIR", s.Dir)
	fmt.Fprintf(ts.Stdout(), "postgres in %s\n", s.Dir)
}
