package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone"
)

// ChildMain runs the benchmark's child roles when args name one:
// "rawserver" (the raw baseline server) and "hub" (zone.RunHub with the
// pzh serve flags the benchmark uses, for when no pzh binary is at hand,
// as in the smoke test). It reports whether args named a role.
func ChildMain(ctx context.Context, args []string) (handled bool, code int) {
	if len(args) == 0 || (args[0] != "rawserver" && args[0] != "hub") {
		return false, 0
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	kind := fs.String("kind", "quic", "")
	listen := fs.String("listen", "", "")
	dir := fs.String("dir", "", "")
	data := fs.String("data", "", "")
	fs.String("log-level", "", "")
	noTCP := fs.Bool("no-tcp", false, "")
	noQUIC := fs.Bool("no-quic", false, "")
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pzbench %s: %v\n", args[0], err)
		return true, 2
	}
	var err error
	if args[0] == "rawserver" {
		err = RunRawServer(ctx, transport.Kind(*kind), *listen, *dir)
	} else {
		kinds := []transport.Kind{}
		if !*noQUIC {
			kinds = append(kinds, transport.KindQUIC)
		}
		if !*noTCP {
			kinds = append(kinds, transport.KindTCP)
		}
		err = zone.RunHub(ctx, zone.HubConfig{DataDir: *data, Listen: *listen, Transports: kinds})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pzbench %s: %v\n", args[0], err)
		return true, 1
	}
	return true, 0
}
