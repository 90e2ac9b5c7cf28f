package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

// The data subcommands read and write the zone's replicated store through
// a running daemon. pzp data and pzh data are the same commands aimed at
// different sockets: a dataDaemon says which.

// dataDaemon is the daemon data subcommands talk to.
type dataDaemon struct {
	prog   string // pzp or pzh, for examples in help
	socket string // api.PeerSocketName or api.HubSocketName
	what   string // how errors name it
	start  string // the command that starts it
}

// dataOptions are the flags every data subcommand shares.
type dataOptions struct {
	g      *globals
	daemon dataDaemon
	bucket string
	json   bool
}

func (o *dataOptions) register(cmd *cobra.Command, jsonHelp string) {
	cmd.Flags().StringVar(&o.bucket, "bucket", zsync.BucketAppData, "bucket: "+strings.Join(zsync.Buckets(), ", ")+"; outside appdata, KEY is the bucket's own key")
	cmd.Flags().BoolVar(&o.json, "json", false, jsonHelp+" (fields in docs/PROTOCOL.md)")
}

// client runs fn with a client of the daemon, and explains a daemon that
// is not running.
func (o *dataOptions) client(fn func(*api.Client) error) error {
	dir, err := o.g.dataDir()
	if err != nil {
		return err
	}
	c := api.NewClient(api.SocketPath(dir, o.daemon.socket))
	if o.daemon.socket == api.PeerSocketName {
		c = deviceClient(dir)
	}
	err = fn(c)
	return notRunningHint(err, o.daemon.what, o.daemon.start+" --data "+dir)
}

// key checks a KEY argument: APP/KEY in appdata, the key itself elsewhere.
func (o *dataOptions) key(arg string) (string, error) {
	if err := zsync.CheckKey(o.bucket, arg); err != nil {
		return "", usageError{err}
	}
	return arg, nil
}

// prefix turns an optional [APP[/PREFIX]] argument into a key prefix. In
// appdata a bare APP means all of that application's keys (APP/, not
// APP2/); elsewhere the argument is the prefix as it is.
func (o *dataOptions) prefix(args []string) (string, error) {
	if !slices.Contains(zsync.Buckets(), o.bucket) {
		return "", usagef("unknown bucket %q (buckets: %s)", o.bucket, strings.Join(zsync.Buckets(), ", "))
	}
	if len(args) == 0 {
		return "", nil
	}
	p := args[0]
	if o.bucket != zsync.BucketAppData {
		return p, nil
	}
	app, _, hasKey := strings.Cut(p, "/")
	if zsync.CheckKey(o.bucket, app+"/k") != nil {
		return "", usagef("%q: APP must be lower-case letters, digits, '-', '_' or '.'", app)
	}
	if !hasKey {
		p += "/"
	}
	return p, nil
}

// readValue is the value of data set: the argument itself, the contents
// of a file for "@PATH", standard input for "-" or no argument. A value
// starting with "@" is given on standard input.
func readValue(args []string, stdin io.Reader) ([]byte, error) {
	from := "standard input"
	var r io.Reader = stdin
	switch {
	case len(args) == 0 || args[0] == "-":
	case args[0] == "@":
		return nil, usagef("@ needs a file name (@PATH); to store a value starting with @, give it on standard input")
	case strings.HasPrefix(args[0], "@"):
		from = args[0][1:]
		f, err := os.Open(from)
		if err != nil {
			return nil, fmt.Errorf("read the value: %w", err)
		}
		defer f.Close()
		r = f
	default:
		if len(args[0]) > zsync.MaxValue {
			return nil, tooBig("the value")
		}
		return []byte(args[0]), nil
	}
	v, err := io.ReadAll(io.LimitReader(r, zsync.MaxValue+1))
	if err != nil {
		return nil, fmt.Errorf("read the value from %s: %w", from, err)
	}
	if len(v) > zsync.MaxValue {
		return nil, tooBig("the value in " + from)
	}
	return v, nil
}

func tooBig(what string) error {
	return fmt.Errorf("%s is over the %d-byte limit (%d KiB) of a record; keep bulk data out of the zone state", what, zsync.MaxValue, zsync.MaxValue>>10)
}

// shown renders a value on one line: its text when that is printable
// UTF-8 on a single line, else its size.
func shown(v api.RecordView) string {
	if v.Text != nil && !strings.ContainsFunc(*v.Text, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return *v.Text
	}
	return fmt.Sprintf("<%d bytes>", len(v.Value))
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// jsonArray writes a JSON array element by element, as printJSON would
// write the whole slice, so a long listing is never held in memory.
type jsonArray struct {
	w io.Writer
	n int
}

func (a *jsonArray) add(v any) error {
	b, err := json.MarshalIndent(v, "  ", "  ")
	if err != nil {
		return err
	}
	sep := ",\n  "
	if a.n == 0 {
		sep = "[\n  "
	}
	a.n++
	_, err = fmt.Fprintf(a.w, "%s%s", sep, b)
	return err
}

func (a *jsonArray) close() error {
	end := "\n]\n"
	if a.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(a.w, end)
	return err
}

// newDataCmd is the data command group of pzp or pzh.
func newDataCmd(g *globals, d dataDaemon, long string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Read, write, list and watch the zone's replicated data",
		Long: long + `

Records live in buckets. The default bucket, appdata, holds application data
under keys APP/KEY, APP made of lower-case letters, digits, '-', '_' and '.'.
With --bucket NAME the KEY argument is the bucket's own key, for example:
  ` + d.prog + ` data set --bucket devices phone '{"os":"linux"}'
Values are bytes, up to 256 KiB.`,
		// Runnable only so that an unknown subcommand is a usage error
		// rather than a help page.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	o := func() *dataOptions { return &dataOptions{g: g, daemon: d} }
	cmd.AddCommand(newDataSetCmd(o()), newDataGetCmd(o()), newDataDelCmd(o()), newDataListCmd(o()), newDataWatchCmd(o()), newDataImportCmd(o()))
	return cmd
}
